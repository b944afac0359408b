"""The state the pipeline's steps pass along: one :class:`RunState` per ``quantize_model`` call,
one :class:`LayerStep` per layer (filled in by the steps of :mod:`qubo_round.pipeline.run`:
capture, solve, polish, held-out choice, write-back)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from ..attention import AttentionSite
from ..grid import Grid
from ..kronecker import KroneckerLoss
from ..layers import LayerAdapter
from ..stats import FinishedOutputs, FloatInputs, LayerStats
from .checkpoint import RunDirectory
from .config import LayerOverride, QuantConfig
from .report import QuantReport


@dataclass
class RunState:
    """What every layer of one run shares.

    Attributes:
        config: the run's configuration; ``device``, ``progress``, ``threads`` (the solvers' CPU
            threads): where and how it runs.
        fmodel: the float network (batch norm folded); ``qmodel``: its copy being quantized.
        batches: the calibration batches fitted on; ``hold``: the held-out ones (may be empty).
        relu_after: layers followed by a ReLU (activation-aware loss); ``run_dir``: checkpoints.
        float_inputs, replay: the caches of float layer inputs and finished submodule outputs.
        report: the report being filled in.
        sites: value projection name -> its attention site, for the layers solved on the
            attention-mixed loss (``value_loss='attention'``; empty otherwise); ``mixed``: their
            float statistics, captured together at the first one (layer-wise reconstruction).
        factors: Linear layer name -> its Kronecker Gauss-Newton output loss
            (``output_loss='gauss-newton'``; empty otherwise).
    """

    config: QuantConfig
    device: str
    progress: bool
    fmodel: nn.Module
    qmodel: nn.Module
    batches: list
    threads: int
    hold: list
    relu_after: set
    run_dir: RunDirectory | None
    float_inputs: FloatInputs | None
    replay: FinishedOutputs | None
    report: QuantReport
    sites: dict[str, AttentionSite] = field(default_factory=dict)
    mixed: dict[str, LayerStats] = field(default_factory=dict)
    factors: dict[str, KroneckerLoss] = field(default_factory=dict)

    @property
    def layerwise(self) -> bool:
        """Layer-wise reconstruction (eq. 20): ``x_hat = x``, every layer sees the float inputs."""
        return self.config.reconstruction == "layerwise"

    @property
    def asymmetric_weight(self) -> float:
        """Weight ``a`` of the asymmetric statistics in the layer problems (0 when layer-wise)."""
        return 0.0 if self.layerwise else float(self.config.asymmetric_weight)

    @property
    def model_hat(self) -> nn.Module:
        """The network whose layer inputs are ``x_hat``: the float one when layer-wise."""
        return self.fmodel if self.layerwise else self.qmodel


@dataclass
class LayerStep:
    """One layer on its way through the steps (fields are set by the step named beside them).

    Attributes:
        index, name, lcfg: the layer, its position and its settings; ``t0``: when it started.
        grid, ad, activation, form, seed, problems (one QUBO per group): capture.
        capture_seconds: capturing statistics (and the data form's columns).
        Vs (one rounding per group), statuses, infos, solve_seconds: solve.
        solver_Vs, solver_loss, flips, polish_seconds: polish (``solver_Vs``: before it).
        near: round-to-nearest roundings; ``holdout``: the held-out report fields;
            ``output``: the output-loss descent's report fields; ``kronecker``: under asymmetric
            reconstruction the layer's own output loss (quantized inputs), else None.
        weight_shape, groups, rows (per group), cols: the layer's dimensions (capture);
            ``row_blocks``: the problems are that many blocks of rows of one weight group.
    """

    index: int
    name: str
    lcfg: LayerOverride
    t0: float
    grid: Grid | None = None
    ad: LayerAdapter | None = None
    activation: str = "none"
    form: str = "covariance"
    seed: int = 0
    problems: list = field(default_factory=list)
    capture_seconds: float = 0.0
    Vs: list[np.ndarray] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    infos: list[dict[str, Any]] = field(default_factory=list)
    solve_seconds: float = 0.0
    solver_Vs: list[np.ndarray] = field(default_factory=list)
    solver_loss: float | None = None
    flips: int = 0
    polish_seconds: float = 0.0
    near: list[np.ndarray] = field(default_factory=list)
    holdout: dict[str, Any] = field(default_factory=dict)
    output: dict[str, Any] = field(default_factory=dict)
    kronecker: Any = None
    weight_shape: tuple[int, ...] = ()
    groups: int = 1
    rows: int = 0
    cols: int = 0
    row_blocks: int = 1
