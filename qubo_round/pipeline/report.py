"""The report of a quantization run: one row per layer, skipped layers, totals."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LayerReport:
    """One quantized layer. Losses are the asymmetric reconstruction loss (the QUBO energy)
    ``sum_k E[(w_k^T x - w_hat_k^T x_hat)^2]`` on the calibration data, summed over groups
    (with ``reconstruction="layerwise"``: ``x_hat = x``, the layer-wise loss of eq. 20)."""

    name: str
    index: int
    groups: int
    rows: int
    cols: int
    bits: int
    solver: str
    form: str
    activation: str
    nearest_loss: float
    loss: float
    changed_fraction: float
    seconds: float
    status: str
    resumed: bool = False
    #: loss of the solver's own rounding before the polish (None: not polished)
    solver_loss: float | None = None
    #: single flips the polish made (0: the solver's rounding was already a 1-flip minimum)
    polish_flips: int = 0
    #: Where ``seconds`` went: capturing the layer's calibration statistics (and, for the data
    #: form, its cached input columns); inside the solver (covariance form: ``solve`` of every
    #: group; data form: the optimisation loop); in the polish. The rest of ``seconds`` is problem
    #: construction and bookkeeping. (0 in reports of runs made before these were recorded.)
    capture_seconds: float = 0.0
    solve_seconds: float = 0.0
    polish_seconds: float = 0.0
    #: iterations the relaxation ran (the most over the layer's groups; fewer than asked when
    #: every entry froze early); None for solvers that do not report iterations.
    iterations: int | None = None
    #: with ``QuantConfig.holdout``: the layer's loss on the held-out batches for nearest and
    #: for the final rounding, and the rows whose solver / polish change it refused (None: no
    #: holdout)
    holdout_nearest_loss: float | None = None
    holdout_loss: float | None = None
    rows_refused: int | None = None
    #: with ``QuantConfig.output_loss``: the layer's Kronecker Gauss-Newton output loss
    #: ``tr(G dW H dW^T)`` before and after its descent, the flips it made and its seconds (None:
    #: not descended, e.g. a convolution), and the weight its ``G`` was shrunk toward its diagonal by
    output_loss_start: float | None = None
    output_loss: float | None = None
    output_flips: int | None = None
    output_seconds: float | None = None
    output_shrinkage: float | None = None


@dataclass
class QuantReport:
    layers: list[LayerReport] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    folded_bn: list[str] = field(default_factory=list)
    seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)
    #: layer name -> LayerQState (integers, scales, zero points) for export; not in rows/JSON.
    qstate: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def loss(self) -> float:
        """Sum of the layers' losses (each layer's reconstruction loss, :class:`LayerReport`)."""
        return float(sum(r.loss for r in self.layers))

    @property
    def nearest_loss(self) -> float:
        """Sum of the layers' losses under nearest rounding."""
        return float(sum(r.nearest_loss for r in self.layers))

    def rows(self) -> list[dict[str, Any]]:
        """Flat per-layer rows (``pandas.DataFrame(report.rows())``)."""
        return [dataclasses.asdict(r) for r in self.layers]

    def to_json(self) -> str:
        return json.dumps({"layers": self.rows(), "skipped": self.skipped, "folded_bn": self.folded_bn,
                           "seconds": self.seconds, "config": self.config}, default=str)

    def to_markdown(self) -> str:
        lines = ["| layer | rows x cols | groups | bits | solver | form | nearest loss | loss | "
                 "polish | changed vs nearest | iterations | seconds (in solver) |",
                 "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in self.layers:
            lines.append(f"| {r.name} | {r.rows}x{r.cols} | {r.groups} | {r.bits} | {r.solver} | {r.form}"
                         f"{'+relu' if r.activation == 'relu' else ''} | {r.nearest_loss:.4g} | {r.loss:.4g} | "
                         f"{_polish_cell(r)} | {100 * r.changed_fraction:.1f}% | "
                         f"{'-' if r.iterations is None else r.iterations} | "
                         f"{r.seconds:.2f} ({r.solve_seconds:.2f}){' (resumed)' if r.resumed else ''} |")
        held = [r for r in self.layers if r.holdout_loss is not None]
        for name, why in self.skipped.items():
            lines.append(f"| {name} | skipped: {why} | | | | | | | | | | |")
        if self.layers:
            layer_s = sum(r.seconds for r in self.layers)
            solve_s = sum(r.solve_seconds for r in self.layers)
            lines.append(f"| **total** ({len(self.layers)} layers) | | | | | | {self.nearest_loss:.4g} | {self.loss:.4g} | "
                         f"| | | {layer_s:.2f} ({solve_s:.2f}) |")
        out = [r for r in self.layers if r.output_loss is not None]
        if out:
            lines += ["", "| layer | output loss, solver | output loss, descended | flips | G shrinkage | seconds |",
                      "|---|---|---|---|---|---|"]
            lines += [f"| {r.name} | {r.output_loss_start:.4g} | {r.output_loss:.4g} | {r.output_flips} | "
                      f"{'-' if r.output_shrinkage is None else f'{r.output_shrinkage:.3f}'} | "
                      f"{r.output_seconds:.2f} |" for r in out]
            if self.config.get("reconstruction", "asymmetric") == "asymmetric":  # to_dict drops the default
                lines += ["", "(asymmetric reconstruction: the output loss about W*, the weight that reproduces the "
                          "float layer from the quantized inputs, less the part no rounding removes; value "
                          "projections on the attention-mixed loss: about W with the float inputs)"]
        if held:
            lines += ["", "| layer | held-out loss, nearest | held-out loss | row changes refused |", "|---|---|---|---|"]
            lines += [f"| {r.name} | {r.holdout_nearest_loss:.4g} | {r.holdout_loss:.4g} | {r.rows_refused} |"
                      for r in held]
        return "\n".join(lines)


def _polish_cell(r: LayerReport) -> str:
    """``-`` (not polished), or the flips and the solver's own loss they improved on."""
    if r.solver_loss is None:
        return "-"
    return f"{r.polish_flips} flips (from {r.solver_loss:.4g})" if r.polish_flips else "0 flips"
