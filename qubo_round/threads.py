"""The one place that limits threads: BLAS (through threadpoolctl) and torch's intra-op pool.

Most of our dense work is many small products and factorisations; on the 2 shared cores we
measure on, one thread per computation beats threaded BLAS (the SDP conformance problems: 7.9 s
-> 0.5 s; building a MiniLM problem's eigendecomposition: 20 s -> 1.3 s). Everything that limits
threads goes through :func:`limit_threads` (a block) or :func:`set_threads` (a worker process).
torch is only touched when it is already imported, so the core does not import it.
"""
from __future__ import annotations

import os
import sys
from contextlib import ExitStack, contextmanager
from typing import Iterator

__all__ = ["limit_threads", "set_threads", "THREAD_VARIABLES"]

#: Environment variables read by OpenMP, OpenBLAS and MKL when they start.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _blas_threads() -> int | None:
    """The largest thread count of the loaded BLAS libraries (None: none loaded). The largest:
    some bundle a single-threaded BLAS (scs's OpenBLAS reports 1 thread beside numpy's 2)."""
    from threadpoolctl import threadpool_info
    counts = [int(i["num_threads"]) for i in threadpool_info() if i.get("user_api") == "blas"]
    return max(counts) if counts else None


@contextmanager
def limit_threads(n: int | None, *, blas: bool = True, torch: bool = True) -> Iterator[None]:
    """At most ``n`` BLAS threads (``blas``) and torch intra-op threads (``torch``, when torch is
    imported) while the block runs; the previous settings come back afterwards.

    Re-entrant without shared state: a limit already at or below ``n`` is left alone (so a
    worker thread of an outer limited block does not restore a larger count under its
    siblings). ``n`` None changes nothing.
    """
    if n is None:
        yield
        return
    n = int(n)
    if n < 1:
        raise ValueError(f"thread count must be >= 1 or None, got {n}")
    with ExitStack() as stack:
        if blas:
            current = _blas_threads()
            if current is not None and current > n:
                from threadpoolctl import threadpool_limits
                stack.enter_context(threadpool_limits(limits=n, user_api="blas"))
        tm = sys.modules.get("torch") if torch else None
        before = tm.get_num_threads() if tm is not None else 0
        if before > n:
            tm.set_num_threads(n)
            stack.callback(tm.set_num_threads, before)
        yield


def set_threads(n: int) -> None:
    """Keep this process (a worker) to ``n`` threads for good: the environment variables for
    libraries loaded later, threadpoolctl for those loaded, and torch if imported."""
    n = int(n)
    for var in THREAD_VARIABLES:
        os.environ.setdefault(var, str(n))
    from threadpoolctl import threadpool_limits
    threadpool_limits(limits=n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
