"""numpy's BLAS thread pool, limited in-process.

OpenBLAS starts one thread per core and spins them on every matrix product (the
frontend's mel projection, a head's layers). On a 2-core device that pool fights the
inference thread: measured 30.8 ms per window with the default pool against 9.5 ms with
one thread. Setting ``OPENBLAS_NUM_THREADS`` only works before numpy loads, so the agent
limits the pool it finds at start instead (threadpoolctl).
"""

from __future__ import annotations

from typing import Any

_limiter: Any = None  # kept alive: the limit holds until the process ends


def limit_blas_threads(threads: int) -> list[int]:
    """Limit every BLAS library loaded in this process; returns their thread counts."""
    global _limiter
    from threadpoolctl import threadpool_info, threadpool_limits

    _limiter = threadpool_limits(limits=threads, user_api="blas")
    return [int(info["num_threads"]) for info in threadpool_info() if info["user_api"] == "blas"]
