"""The one thread limiter (qubo_round.threads)."""
import threading

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info, threadpool_limits

from qubo_round.threads import limit_threads


def _blas():
    """The largest BLAS thread count (a bundled single-threaded BLAS, as scs's, reports 1)."""
    return max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")


def test_limits_blas_and_torch_and_restores():
    import scs  # noqa: F401  (loads a single-threaded OpenBLAS beside numpy's: must not stop the limit)
    np.ones(3) @ np.ones(3)  # BLAS loaded
    with threadpool_limits(limits=2, user_api="blas"):
        torch_before = torch.get_num_threads()
        torch.set_num_threads(2)
        try:
            with limit_threads(1):
                assert _blas() == 1 and torch.get_num_threads() == 1
                with limit_threads(2):  # never raises an outer limit
                    assert _blas() == 1 and torch.get_num_threads() == 1
                assert _blas() == 1
            assert _blas() == 2 and torch.get_num_threads() == 2
            with limit_threads(1, torch=False):
                assert _blas() == 1 and torch.get_num_threads() == 2
            with limit_threads(1, blas=False):
                assert _blas() == 2 and torch.get_num_threads() == 1
            with limit_threads(None):
                assert _blas() == 2 and torch.get_num_threads() == 2
        finally:
            torch.set_num_threads(torch_before)


def test_restores_after_an_error_and_refuses_bad_counts():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError):
        with limit_threads(1):
            raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match=">= 1"):
        with limit_threads(0):
            pass


def test_inner_blocks_in_worker_threads_do_not_restore_under_siblings():
    """Worker threads inside a limited block find the limit in place and leave it alone."""
    np.ones(3) @ np.ones(3)
    seen = []
    with threadpool_limits(limits=2, user_api="blas"):
        with limit_threads(1, torch=False):
            def work():
                with limit_threads(1, torch=False):
                    seen.append(_blas())
                seen.append(_blas())
            ts = [threading.Thread(target=work) for _ in range(4)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
        assert _blas() == 2
    assert seen == [1] * 8
