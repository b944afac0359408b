"""Where trials run: in this process, in a local process pool, or on a Dask cluster.

All three expose ``map_unordered(fn, items)``, yielding ``(item, result)`` as results arrive.
``fn`` must be a module-level function (it is pickled to workers) that does not raise for
expected failures; an unexpected exception propagates.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Iterable, Iterator

from qubo_round.extras import require
from qubo_round.threads import set_threads

log = logging.getLogger(__name__)

def limit_threads(n: int = 1) -> None:
    """Keep one worker process to ``n`` BLAS / OpenMP / torch threads (no oversubscription)."""
    set_threads(n)


def _exit_with_parent(parent: int, interval: float = 1.0) -> None:
    """Daemon thread body: end this worker when its parent dies (e.g. a sweep killed with
    SIGKILL), instead of lingering as an orphan."""
    import time
    while os.getppid() == parent:
        time.sleep(interval)
    os._exit(1)


def init_worker(parent: int) -> None:
    """Process-pool initializer: one thread per worker and exit with the parent."""
    import threading
    limit_threads(1)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


class SerialExecutor:
    """Runs every item in this process, in order (``workers <= 1``)."""

    description = "in-process"

    def map_unordered(self, fn: Callable, items: Iterable) -> Iterator[tuple[Any, Any]]:
        for item in items:
            yield item, fn(item)

    def close(self, abort: bool = False) -> None:
        pass


class PoolExecutor:
    """A local process pool (spawned processes, one BLAS thread each)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.description = f"local pool of {workers} processes"
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=init_worker, initargs=(os.getpid(),))

    def map_unordered(self, fn: Callable, items: Iterable) -> Iterator[tuple[Any, Any]]:
        futures = {self._pool.submit(fn, item): item for item in items}
        try:
            for fut in as_completed(futures):
                yield futures[fut], fut.result()
        finally:
            for fut in futures:
                fut.cancel()

    def close(self, abort: bool = False) -> None:
        """Shut the pool down; ``abort`` also stops trials still running (interrupted sweep)."""
        if abort:
            for proc in list(getattr(self._pool, "_processes", {}).values()):
                proc.terminate()
        self._pool.shutdown(wait=not abort, cancel_futures=True)


class DaskExecutor:
    """A dask.distributed cluster: a scheduler address (``tcp://host:8786``), ``"local"`` (a
    LocalCluster of ``workers`` single-threaded processes) or an existing ``Client``."""

    def __init__(self, scheduler: Any, workers: int | None = None) -> None:
        dist = require("distributed", "dask", "the Dask executor")
        Client, LocalCluster = dist.Client, dist.LocalCluster
        self._own: list = []
        if isinstance(scheduler, Client):
            self.client = scheduler
        elif scheduler == "local":
            cluster = LocalCluster(n_workers=workers or os.cpu_count(), threads_per_worker=1)
            self.client = Client(cluster)
            self._own = [self.client, cluster]
        else:
            self.client = Client(scheduler)
            self._own = [self.client]
        address = getattr(getattr(self.client, "scheduler", None), "address", "?")
        self.description = f"dask cluster at {address}"

    def map_unordered(self, fn: Callable, items: Iterable) -> Iterator[tuple[Any, Any]]:
        from distributed import as_completed as dask_completed

        items = list(items)
        futures = [self.client.submit(fn, item, pure=False) for item in items]
        index = {f.key: i for i, f in enumerate(futures)}
        try:
            for fut in dask_completed(futures):
                yield items[index[fut.key]], fut.result()
        finally:
            self.client.cancel([f for f in futures if not f.done()])

    def close(self, abort: bool = False) -> None:
        for obj in self._own:
            obj.close()


def make_executor(workers: int | None = None, scheduler: Any = None):
    """Serial for ``workers <= 1``, a process pool otherwise, Dask when ``scheduler`` is given."""
    if scheduler is not None:
        return DaskExecutor(scheduler, workers)
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers <= 1:
        return SerialExecutor()
    return PoolExecutor(workers)
