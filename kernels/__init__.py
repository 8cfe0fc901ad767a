"""Compiled kernels: pure arrays in, arrays out; no classes, no Ray.

Array API (metric and derivatives given as arrays, point axis first, see DESIGN.md):
``christoffel(g, dg)``, ``riemann(g, dg, d2g)``, ``ricci(g, dg, d2g)``,
``scalar_curvature(g, dg, d2g)``, ``sectional_curvature(g, dg, d2g, u, v)``.
The fused per-model paths live behind ``anant_fast.metrics``.
"""
from .batch import christoffel, ricci, riemann, scalar_curvature, sectional_curvature
from . import superposition  # noqa: F401  (kernels.superposition: layer-superposition kernels)

__all__ = ["christoffel", "riemann", "ricci", "scalar_curvature", "sectional_curvature"]
