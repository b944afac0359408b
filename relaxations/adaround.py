"""AdaRound's continuous relaxation (eq. 21-24) on any QUBO family, batched over rows.

The rounding variables ``V in {0,1}`` are relaxed to the rectified sigmoid of a real matrix
(also written ``V`` in the paper; ``theta`` here, shape (rows, n))::

    h(theta) = clip(sigmoid(theta) (zeta - gamma) + gamma, 0, 1),      zeta = 1.1, gamma = -0.1

and the solver minimises, with Adam on ``theta``::

    F(theta) = sum_k E_k(h_k) / u_k  +  lambda * sum_{k, i free} (1 - |2 h_ki - 1|^beta)

``E_k(h)`` is the row's continuous form (:mod:`qubo_round.relaxations.objective`; in the covariance
form the reconstruction loss ``tr(dW H dW^T)`` of ``W_tilde = s (floor + h)``, computed from the
matrix ``H`` instead of data batches) and ``u_k`` the row unit, the loss of one free weight moved
by one grid step. So ``lambda`` is measured in "one-step rounding errors per weight": independent
of the weight and activation scales of the layer (the paper's ``lambda = 0.01`` multiplies an MSE
averaged over output elements instead, whose magnitude depends on the layer). The defaults
``lambda = 1``, ``lr = 1e-2`` (10k iterations; preset ``fast``: 2k iterations at ``lr = 0.1``) were
chosen on the digits model's layers at 3 bits (``benchmarks/relaxations_digits.py``): lambda in
[1, 3] did best there; 0.1 gave up to 1.4x higher energies per layer (10k iterations) and 0.01
about 4x on average (2k). For comparison, a weight of 0.01 on the raw loss would have meant
0.05 to 126 units across the rows of that model: the per-row unit is what makes one default work.

Schedule (:class:`~qubo_round.relaxations.schedule.AdaRoundSchedule`, shared with the data form):
the first ``warmup`` fraction of the iterations runs without the regulariser; then ``beta``
decays from ``beta_start`` to ``beta_end`` (linear or cosine). Start: ``h(theta) = prior``
(``frac(W/s)``; 0.5 on a plain QUBO). End: ``theta >= 0`` rounds up. Fixed variables are held at
their values throughout. The method is deterministic (no sampling: full-batch covariance form).

``rectified=False`` replaces the rectified sigmoid by the plain sigmoid ``h = sigmoid(theta)``
(``zeta = 1``, ``gamma = 0``: Table 3's "sigmoid + f_reg" row), which reaches 0 and 1 only
asymptotically; the covariance form only (the data form refuses it).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from qubo_round.problem import QUBOFamily
from qubo_round.solvers.registry import register

from .active import KERNELS, MIN_ENTRIES, THETA_CLIP, ActiveSet, CovarianceGrad  # noqa: F401  (THETA_CLIP re-exported)
from .fused import check_compiled
from .objective import DTYPES, TorchSolver, check_device_dtype, initial_h, resolve_device, steps
from .schedule import GAMMA, ZETA, AdaRoundSchedule

log = logging.getLogger(__name__)


def rectified_sigmoid(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(h, dh/dtheta, raw)`` of eq. 23 for theta (rows, n); the derivative is zero where the clip
    is active (as autograd's clamp gives), ``raw`` is the unclipped value."""
    sig = torch.sigmoid(theta)
    raw = sig * (ZETA - GAMMA) + GAMMA
    inside = (raw >= 0) & (raw <= 1)
    dh = (ZETA - GAMMA) * sig * (1 - sig) * inside
    return raw.clamp(0.0, 1.0), dh, raw


def inverse_rectified_sigmoid(h: torch.Tensor) -> torch.Tensor:
    """``theta`` with ``h(theta) = h`` for h in [0, 1] (finite everywhere)."""
    sig = (h - GAMMA) / (ZETA - GAMMA)
    return torch.log(sig) - torch.log1p(-sig)


@dataclass(frozen=True)
class AdaRoundParams(AdaRoundSchedule):
    """The schedule's fields and checks (:class:`AdaRoundSchedule`: iterations, lr, lam, beta,
    warmup, decay), and where and how to compute."""

    device: str = "cpu"  # "cpu" | "cuda" | "auto"
    dtype: str = "float32"
    threads: int | None = 1
    progress: bool = False  # a tqdm bar over the iterations (display only)
    rectified: bool = True  # False: plain sigmoid h = sigmoid(theta) (Table 3)
    # speed only, same rounding (benchmarks/relaxation_step.py measures them):
    flush_subnormals: bool = True  # flush subnormal floats during the solve (objective.cpu_settings)
    compact_min_entries: int = MIN_ENTRIES  # compact frozen entries away in problems this large (active.py)
    # the element-wise step: "eager" torch ops or "compiled" (fused by torch.compile, relaxations.fused;
    # faster on large layers, may round near-ties differently)
    kernel: str = "eager"

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("rectified", "flush_subnormals"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {self.kernel!r}")
        m = self.compact_min_entries
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 0:
            raise ValueError(f"compact_min_entries must be an integer >= 0, got {m!r}")
        check_device_dtype(self.device, self.dtype, self.threads)


def check_kernel(p: AdaRoundParams) -> None:
    """Before any work: with ``kernel="compiled"`` this machine must be able to compile it (a few
    seconds, once per process)."""
    if p.kernel == "compiled":
        check_compiled(resolve_device(p.device), DTYPES[p.dtype])


@register("adaround", presets={"fast": {"iterations": 2000, "lr": 0.1}, "paper": {"iterations": 20000},
                               "warm": {"iterations": 50, "lr": 0.1},
                               "cosine": {"decay": "cosine"}, "gpu": {"device": "cuda"},
                               "plain-sigmoid": {"rectified": False},
                               "compiled": {"kernel": "compiled"}})
class AdaRound(TorchSolver):
    """AdaRound: rectified-sigmoid relaxation with the annealed regulariser (eq. 21-24), on the
    QUBO's continuous form (no data batches); ``theta >= 0`` rounds up."""

    has_data_form = True  # qubo_round.pipeline.data_form runs it on mini-batches

    Params = AdaRoundParams

    def flush_subnormals(self) -> bool:
        return bool(self.params.flush_subnormals)

    def check(self, problem: QUBOFamily) -> None:
        super().check(problem)
        check_kernel(self.params)

    def sample(self, problem: QUBOFamily, *, rng, start, time_limit):
        t0 = time.perf_counter()
        p = self.params
        obj = self.setup(problem)
        # plain sigmoid: h = sigmoid(theta), i.e. zeta = 1, gamma = 0 (never clipped)
        zeta, gamma = (ZETA, GAMMA) if p.rectified else (1.0, 0.0)
        h0 = obj.tensor(initial_h(problem, start))
        theta = inverse_rectified_sigmoid(h0) if p.rectified else _logit(h0.clamp(PLAIN_EPS, 1 - PLAIN_EPS))
        # the free entries that can still move, compacted as they freeze (relaxations.active)
        aset = ActiveSet(theta, obj.free, obj.fixed_value, p.lr, zeta, gamma, min_entries=p.compact_min_entries,
                         kernel=p.kernel)
        grad = CovarianceGrad(obj, aset)
        sched = AdaRoundSchedule.of(p)
        status, done, frozen = "feasible", 0, None
        for it in steps(p.iterations, p.progress, self.name):
            if time_limit is not None and time.perf_counter() - t0 > time_limit:
                status = "time_limit"
                break
            sig, h, inside = aset.step_h()
            aset.step(grad(), h, sig, inside, sched.beta(it), p.lam)
            done = it + 1
            if p.rectified and done % FREEZE_CHECK == 0 and aset.check():
                frozen = done  # every h clipped, no momentum can unclip one: final
                break
        theta = aset.full_theta()
        h = obj.hold_fixed(aset.forward(theta)[1])  # final h (plain sigmoid: zeta = 1, gamma = 0)
        X = problem.apply_fixed((theta >= 0).cpu().numpy())
        free = obj.free
        soft = ((h > 0.01) & (h < 0.99) & free).sum().item() / max(1, int(free.sum().item()))
        log.debug("adaround: %d iterations (frozen at %s), %.1f%% of free h not at 0/1", done, frozen,
                  100 * soft)
        return X, {"status": status, "iterations_done": done, "frozen_at": frozen, "compactions": aset.version,
                   "device": str(obj.device), "relaxed_energy": float(obj.energies(h).sum()),
                   "soft_fraction": soft}


#: Plain sigmoid: the prior is clamped to [eps, 1 - eps] before its logit is taken.
PLAIN_EPS = 1e-4


def _logit(h: torch.Tensor) -> torch.Tensor:
    return torch.log(h) - torch.log1p(-h)


#: Iterations between checks of the frozen state.
FREEZE_CHECK = 50
