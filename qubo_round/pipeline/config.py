"""Configuration of a full-network quantization run, and its fingerprint for safe resumption."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from ..grid import Grid

FORMS = ("auto", "covariance", "data")
RECONSTRUCTIONS = ("asymmetric", "layerwise")
VALUE_LOSSES = ("token", "attention")
OUTPUT_LOSSES = ("none", "gauss-newton", "gauss-newton-raw")


@dataclass(frozen=True)
class LayerOverride:
    """Per-layer settings; ``None`` keeps the run's default."""

    bits: int | None = None
    solver: str | None = None
    solver_params: dict[str, Any] | None = None
    skip: bool = False
    form: str | None = None
    polish: bool | None = None

    def __post_init__(self) -> None:
        if self.bits is not None and (isinstance(self.bits, bool) or not isinstance(self.bits, int)
                                      or not 2 <= self.bits <= 8):
            raise ValueError(f"LayerOverride bits must be an integer in 2..8 or None (the run's bits), got {self.bits!r}")
        if not isinstance(self.skip, bool):
            raise TypeError(f"LayerOverride skip must be True or False, got {self.skip!r}")
        if self.solver is not None and not (isinstance(self.solver, str) and self.solver):
            raise ValueError(f"LayerOverride solver must be a registry name or None, got {self.solver!r}")
        if self.solver_params is not None and not isinstance(self.solver_params, dict):
            raise TypeError(f"LayerOverride solver_params must be a dict or None, got {type(self.solver_params).__name__}")


@dataclass(frozen=True)
class QuantConfig:
    """Everything that determines the result of a run (and nothing that does not).

    Attributes:
        bits, granularity, scheme, narrow, scale_method, group_size: the weight grid (see
            :class:`Grid`; ``group_size`` g: one scale per row and group of g input columns).
        solver: registry name (``adaround`` by default), ``solver_params`` its settings.
        form: ``auto`` (covariance unless the data form is much cheaper or an activation is
            asked for: :func:`~qubo_round.pipeline.run.choose_form`), ``covariance`` (the QUBO's exact objective, cost ~2 rows cols^2
            per step) or ``data`` (mini-batches, cost ~4 rows cols batch_cols per step; needed for
            the activation-aware loss).
        activation: ``none`` or ``relu``: activation-aware loss through a following ReLU
            (eq. 25); only layers actually followed by a ReLU in the traced graph use it.
        batch_size: calibration samples per mini-batch of the data form (the paper's 32).
        seed: base seed; layer i uses ``seed + i``.
        overrides: layer name -> :class:`LayerOverride`.
        fold_bn: fold batch norm into the preceding conv/linear first.
        ram_budget_mb: bound on cached layer activations, each: the float network's layer inputs
            held for the run (:class:`~qubo_round.stats.FloatInputs`) and the data form's columns.
        reconstruction: ``asymmetric`` (eq. 25: inputs ``x_hat`` from the network with the earlier
            layers quantized) or ``layerwise`` (eq. 20: ``x_hat = x``, every layer sees the float
            network's inputs, so ``H_hat = C = H``; the paper's Table 4 baseline). In
            :meth:`to_dict` (and so the fingerprint) only when not the default, so run
            directories written before this field existed still resume.
        asymmetric_weight: with ``asymmetric`` reconstruction, the weight ``a`` in [0, 1] of the
            asymmetric loss in ``(1 - a) E_layerwise + a E_asymmetric`` (1, the default: eq. 25
            alone; ``benchmarks/minilm_overfit.py --blend`` measures blends). In :meth:`to_dict`
            only when not 1.
        polish: after the solver, descend by single flips on the layer's exact QUBO to a 1-flip
            local minimum (:func:`~qubo_round.pipeline.run.polish_roundings`): never raises the
            loss, costs milliseconds. Not applied to ``nearest`` (the reference rounding) nor to
            layers with the activation-aware loss (their objective is not the QUBO). ``False``
            gives the solver's own rounding (solver comparisons, the paper's method alone).
        holdout: fraction of the calibration batches (the last ones, at least one) held out of
            every layer's problem (0: none, the default). With a holdout, each row's rounding
            moves from nearest to the solver's and from the solver's to the polished one only
            where that lowers the row's loss on the held-out batches too (rows are independent
            QUBOs, so the choice is per row): :func:`~qubo_round.pipeline.run.accept_on_holdout`.
            The report gives both losses per layer. In :meth:`to_dict` only when not 0.
        value_loss: the loss of self-attention value projections: ``token`` (the per-token
            ``H = E[x x^T]`` of every other layer) or ``attention`` (the loss after each head's
            attention mixing, ``H_h = E[(P_h X)(P_h X)^T]`` per head, :mod:`qubo_round.attention`;
            covariance form). ``attention`` needs a model with such modules (``query``, ``key``,
            ``value`` Linear children returning their attention weights). In :meth:`to_dict` only
            when not ``token``.
        output_loss: ``none``, ``gauss-newton`` or ``gauss-newton-raw``: after its solver and polish,
            every Linear layer's rounding descends (:func:`~qubo_round.kronecker.kronecker_descent`)
            on the K-FAC Gauss-Newton loss of the model's output, ``tr(G dW H dW^T)`` with
            ``G = E[J^T J]`` (:mod:`qubo_round.gauss_newton`), which couples the rows: what the row
            QUBOs (and GPTQ) cannot see. ``gauss-newton`` shrinks the probes' estimate of ``G``
            toward its diagonal by its estimated noise (``-raw``: the estimate as it is).
            Under asymmetric reconstruction the loss is ``tr(G (W_hat - W*) H_hat (W_hat - W*)^T)``
            with the quantized network's inputs (:func:`~qubo_round.kronecker.asymmetric_target`;
            the value projections on the attention-mixed loss keep the float inputs' ``H``).
            Serial runs, no holdout. In :meth:`to_dict` only when not ``none``.
        output_probes: random output directions per calibration batch that estimate ``G``.
    """

    bits: int = 4
    granularity: str = "channel"
    scheme: str = "symmetric"
    narrow: bool = False
    scale_method: str = "mse"
    group_size: int | None = None
    solver: str = "adaround"
    solver_params: dict[str, Any] = field(default_factory=dict)
    form: str = "auto"
    activation: str = "none"
    batch_size: int = 32
    seed: int = 0
    overrides: dict[str, LayerOverride] = field(default_factory=dict)
    fold_bn: bool = True
    ram_budget_mb: float = 2048.0
    reconstruction: str = "asymmetric"
    polish: bool = True
    holdout: float = 0.0
    asymmetric_weight: float = 1.0
    value_loss: str = "token"
    output_loss: str = "none"
    output_probes: int = 4

    def __post_init__(self) -> None:
        self.grid()  # validates the grid fields
        if self.reconstruction not in RECONSTRUCTIONS:
            raise ValueError(f"reconstruction must be one of {RECONSTRUCTIONS}, got {self.reconstruction!r}")
        if self.form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {self.form!r}")
        if self.activation not in ("none", "relu"):
            raise ValueError(f"activation must be 'none' or 'relu', got {self.activation!r}")
        if not isinstance(self.polish, bool):
            raise TypeError(f"polish must be True or False, got {self.polish!r}")
        if isinstance(self.holdout, bool) or not isinstance(self.holdout, (int, float)) or not 0 <= self.holdout < 1:
            raise ValueError(f"holdout must be a fraction in [0, 1) of the calibration batches, got {self.holdout!r}")
        a = self.asymmetric_weight
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0 <= a <= 1:
            raise ValueError(f"asymmetric_weight must be a number in [0, 1], got {a!r}")
        if a != 1 and self.reconstruction != "asymmetric":
            raise ValueError(f"asymmetric_weight={a} applies to reconstruction='asymmetric' only "
                             f"(got {self.reconstruction!r}); drop it or use asymmetric reconstruction")
        if a != 1 and (self.form == "data" or self.activation != "none"
                       or any(o.form == "data" for o in self.overrides.values())):
            raise ValueError(f"asymmetric_weight={a} blends covariance-form QUBOs; the data form and the "
                             "activation-aware loss cannot use it (form='covariance' or 'auto', activation='none')")
        if self.value_loss not in VALUE_LOSSES:
            raise ValueError(f"value_loss must be one of {VALUE_LOSSES}, got {self.value_loss!r}")
        if self.value_loss == "attention" and self.form == "data":
            raise ValueError("value_loss='attention' solves the value projections on their mixed covariance QUBOs; "
                             "form='data' cannot (use form='auto' or 'covariance')")
        if self.output_loss not in OUTPUT_LOSSES:
            raise ValueError(f"output_loss must be one of {OUTPUT_LOSSES}, got {self.output_loss!r}")
        p = self.output_probes
        if isinstance(p, bool) or not isinstance(p, int) or p < 1:
            raise ValueError(f"output_probes must be a positive integer, got {p!r}")
        if self.output_loss != "none" and self.holdout:
            raise ValueError(f"output_loss={self.output_loss!r} descends on the whole layer's output loss after the "
                             "per-row held-out choice would undo: it needs holdout=0")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        for name, o in self.overrides.items():
            if not isinstance(o, LayerOverride):
                raise TypeError(f"override for {name!r} must be a LayerOverride, got {type(o).__name__}")
            if o.form is not None and o.form not in FORMS:
                raise ValueError(f"override form for {name!r} must be one of {FORMS}")
            if o.polish is not None and not isinstance(o.polish, bool):
                raise TypeError(f"override polish for {name!r} must be True, False or None, got {o.polish!r}")

    def grid(self, bits: int | None = None) -> Grid:
        return Grid(bits=bits or self.bits, granularity=self.granularity, scheme=self.scheme,
                    narrow=self.narrow, scale_method=self.scale_method, group_size=self.group_size)

    def for_layer(self, name: str) -> LayerOverride:
        o = self.overrides.get(name, LayerOverride())
        return LayerOverride(bits=self.bits if o.bits is None else o.bits, solver=o.solver or self.solver,
                             solver_params=o.solver_params if o.solver_params is not None else self.solver_params,
                             skip=o.skip, form=o.form or self.form,
                             polish=self.polish if o.polish is None else o.polish)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("ram_budget_mb")  # bounds memory, not the result
        if d["holdout"] == 0:
            d.pop("holdout")  # the default: fingerprints of earlier run directories unchanged
        if d["asymmetric_weight"] == 1:
            d.pop("asymmetric_weight")  # the default: fingerprints of earlier run directories unchanged
        if d["group_size"] is None:
            d.pop("group_size")  # the default: fingerprints of earlier run directories unchanged
        if d["value_loss"] == "token":
            d.pop("value_loss")  # the default: fingerprints of earlier run directories unchanged
        if d["output_loss"] == "none":
            d.pop("output_loss")  # the default: fingerprints of earlier run directories unchanged
            d.pop("output_probes")
        else:  # how G is estimated: run directories made before G was shrunk (a8b96ca) lack it and are refused
            d["output_G"] = "probes, shrunk to the diagonal" if d["output_loss"] == "gauss-newton" else "probes"
        if d["reconstruction"] == "asymmetric":
            d.pop("reconstruction")  # the default: fingerprints of earlier run directories unchanged
        return d

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable differences between two ``to_dict`` outputs."""
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} (run directory) != {new.get(k)!r} (now)" for k in keys
            if json.dumps(old.get(k), sort_keys=True, default=str) != json.dumps(new.get(k), sort_keys=True, default=str)]
