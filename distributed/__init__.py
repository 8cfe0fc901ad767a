"""The Ray distribution layer: sharded kernels over a Ray cluster. Needs ``pip install 'anant-fast[ray]'``."""
try:
    import ray  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("anant_fast.distributed needs Ray: pip install 'anant-fast[ray]'") from exc
