"""Round-to-nearest of every supported layer on the run's grid, without calibration statistics
(the baseline of every report). ``output-mse`` scales need ``H`` and go through the full pipeline."""
from __future__ import annotations

import copy

from torch import nn

from ..grid import rounding_space
from ..layers import LayerAdapter
from .config import QuantConfig
from .graph import execution_order, fold_batchnorm
from .qstate import LayerQState


def nearest_model(model: nn.Module, example_batch, config: QuantConfig) -> nn.Module:
    """A copy of ``model`` with every executed supported layer rounded to nearest."""
    if config.scale_method == "output-mse":
        raise ValueError("nearest_model cannot choose output-mse scales without statistics; use "
                         "quantize_model(..., QuantConfig(solver='nearest', ...))")
    q = copy.deepcopy(model).eval()
    if config.fold_bn:
        fold_batchnorm(q)
    for name in execution_order(q, example_batch):
        lcfg = config.for_layer(name)
        if lcfg.skip:
            continue
        ad = LayerAdapter(q.get_submodule(name), name)
        spaces = [rounding_space(W, config.grid(lcfg.bits)) for W in ad.weights()]
        LayerQState.from_spaces(spaces, [sp.nearest() for sp in spaces], ad.module.weight.shape).apply(ad.module)
    return q
