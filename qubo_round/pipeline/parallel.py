"""Layer-parallel quantization: with layer-wise reconstruction every layer is its own task.

With ``reconstruction="layerwise"`` (eq. 20) a layer's QUBO depends only on the float network:
its weights and ``H = E[x x^T]`` of its float inputs. So one pass of the float network captures
every layer's statistics at once, and the layers are solved as independent tasks on an executor
(a Dask cluster, a local process pool or this process): each task ships the layer's weights and
``H`` (MiniLM's widest: 1536 x 1536 float64, 19 MB), never the model. The tasks run the steps of
the serial pipeline (:func:`qubo_round.pipeline.run.solve_layer`: build, solve, polish,
write-back) with the same seeds, so the quantized model is the serial run's. Finished layers are checkpointed as they
arrive; a rerun with the same run directory resubmits only the missing ones.

The covariance form only (the data form needs the layer's input columns, the activation-aware
loss a ReLU after it); no held-out choice yet.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..grid import Grid
from .config import LayerOverride, QuantConfig

log = logging.getLogger(__name__)

__all__ = ["LayerTask", "check_parallel_config"]


@dataclass
class LayerTask:
    """One layer's problem data, everything a worker needs.

    Attributes:
        index, name: the layer's position in execution order and its module name.
        lcfg: its settings (solver, parameters, bits, polish); ``grid``: its grid; ``seed``.
        weights: per group, the (rows, cols) float64 weight matrix; ``H``: per group (cols, cols).
        weight_shape: the module's weight shape (for the integer tensor).
        row_blocks: k > 1: ``H`` holds one matrix per block of rows of the single weight group
            (the heads of a value projection on the attention-mixed loss).
    """

    index: int
    name: str
    lcfg: LayerOverride
    grid: Grid
    seed: int
    weights: list[np.ndarray]
    H: list[np.ndarray]
    weight_shape: tuple[int, ...]
    row_blocks: int = 1


def check_parallel_config(config: QuantConfig) -> None:
    """The settings a layer-parallel run supports, checked before any work (one-line errors)."""
    if config.reconstruction != "layerwise":
        raise ValueError("layer-parallel runs (client / --scheduler) need reconstruction='layerwise' "
                         "(--reconstruction layerwise): with asymmetric reconstruction each layer's "
                         "problem depends on the layers quantized before it")
    if config.form == "data" or any(o.form == "data" for o in config.overrides.values()):
        raise ValueError("layer-parallel runs use the covariance form; form='data' needs the layer's input "
                         "columns (drop it, or run serially)")
    if config.activation != "none":
        raise ValueError("layer-parallel runs do not support the activation-aware loss (activation='none')")
    if config.holdout:
        raise ValueError("layer-parallel runs do not support holdout yet (holdout=0, or run serially)")
    if config.output_loss != "none":
        raise ValueError(f"layer-parallel runs do not support output_loss={config.output_loss!r} yet "
                         "(output_loss='none', or run serially)")
