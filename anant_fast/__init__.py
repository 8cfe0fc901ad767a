"""anant_fast: fast, exact geometric analytics of data.

``from anant_fast import metrics`` for metric models, their curvature and geodesics;
``anant_fast.LayerStack`` for multi-layer superposed entity states; ``from anant_fast import
kernels`` for the array kernels. Ray (``anant-fast[ray]``) and CUDA (``anant-fast[cuda]``) are optional.
"""
from . import kernels, metrics
from .layers import ContextType, LayerStack, LayerType

__version__ = "0.1.0"
__all__ = ["ContextType", "LayerStack", "LayerType", "kernels", "metrics", "__version__"]
