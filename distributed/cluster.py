"""Connecting to Ray: an embedded local Ray by default, or an existing cluster by address."""
import os
import socket
from urllib.parse import urlsplit

import ray

_started = False       # connect() called ray.init (shutdown() undoes only that)
_dashboard = None      # the dashboard URL connect() got back, if any


def connect(address=None, *, timeout=10.0, **ray_options):
    """Connect this process to Ray and return ``status()``.

    ``address=None`` starts an embedded local Ray (``ray_options`` such as ``num_cpus`` go to
    ``ray.init``); ``"auto"``, ``"host:port"`` or ``"ray://host:port"`` join an existing cluster, which
    must answer within ``timeout`` seconds (a ``ConnectionError`` otherwise, never a hang). An already
    initialised Ray is reused as it is.
    """
    global _started, _dashboard
    if ray.is_initialized():
        _check_same_cluster(address)
        return status()
    if address is not None:
        _check_reachable(address, timeout)
    options = {"logging_level": "warning", "log_to_driver": False}
    options.update(ray_options)
    try:
        context = ray.init(address=address, **options)
    except (ConnectionError, TimeoutError) as exc:
        hint = ("" if address is None else "; a cluster with token authentication (Ray's default) "
                "needs RAY_AUTH_MODE=token and its token in this process too")
        raise ConnectionError(f"could not join the Ray cluster at {address!r}: {exc}{hint}") from None
    _started = True
    _dashboard = getattr(context, "dashboard_url", None) or None
    return status()


def _check_same_cluster(address):
    """Refuse to silently stay on the running Ray when asked for another cluster's address."""
    if address is None or address == "auto" or "://" in address:
        return
    current = ray.get_runtime_context().gcs_address
    if _host_port(address)[1] != _host_port(current)[1]:
        raise RuntimeError(f"this process already runs Ray (at {current}); call "
                           f"anant_fast.distributed.shutdown() before joining {address!r}")


def _host_port(address):
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if not parts.hostname or parts.port is None:
        raise ValueError(f"address must be 'auto', 'host:port' or 'ray://host:port', got {address!r}")
    return parts.hostname, parts.port


def _check_reachable(address, timeout):
    """Fail fast, with a clear message, on an address nothing listens on (``ray.init`` would retry
    for a long time). ``"auto"`` probes the address Ray recorded for this machine's cluster."""
    if address == "auto":
        recorded = os.environ.get("RAY_ADDRESS")
        if not recorded and os.path.exists("/tmp/ray/ray_current_cluster"):
            with open("/tmp/ray/ray_current_cluster") as f:
                recorded = f.read().strip()
        if not recorded:
            raise ConnectionError("address='auto' found no running Ray cluster on this machine "
                                  "(start one with `ray start --head`, or give its address)")
        address = recorded
    host, port = _host_port(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise ConnectionError(f"no Ray cluster answers at {address!r} within {timeout:g} s: {exc}") from None


def ensure_connected():
    """Connect to the embedded local Ray unless Ray is already initialised."""
    if not ray.is_initialized():
        connect()


def status():
    """The cluster as a dict: ``address``, ``nodes``, ``cpus`` and ``free_cpus``, ``gpus``,
    ``memory`` (bytes), ``object_store`` (``total`` and ``used`` bytes), ``dashboard`` (URL or None)."""
    ensure_connected()
    total, free = ray.cluster_resources(), ray.available_resources()
    store = total.get("object_store_memory", 0.0)
    return {
        "address": ray.get_runtime_context().gcs_address,
        "nodes": sum(1 for node in ray.nodes() if node["Alive"]),
        "cpus": total.get("CPU", 0.0),
        "free_cpus": free.get("CPU", 0.0),
        "gpus": total.get("GPU", 0.0),
        "memory": total.get("memory", 0.0),
        "object_store": {"total": store, "used": store - free.get("object_store_memory", store)},
        "dashboard": _dashboard,
    }


def shutdown():
    """Disconnect, if (and only if) ``connect`` started or joined Ray."""
    global _started, _dashboard
    if _started and ray.is_initialized():
        ray.shutdown()
    _started, _dashboard = False, None
