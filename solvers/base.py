"""The solver interface and the result record.

A solver turns a :class:`~qubo_round.problem.QUBOFamily` into a :class:`SolveResult`. Subclasses
implement one method, :meth:`Solver.sample`; :meth:`Solver.solve` wraps it with the checks that
every solver shares: capability flags, parameter validation, timing, fixed-variable checks, and
energies recomputed by the framework (never trusted from the solver).
"""
from __future__ import annotations

import abc
import dataclasses
import importlib.util
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from qubo_round.errors import CapabilityError
from qubo_round.problem import LayerQUBO, QUBOFamily

#: Status strings a result may carry.
STATUSES = ("optimal", "feasible", "time_limit")
#: Timing keys present in every ``SolveResult.info``.
TIMING_KEYS = ("setup_seconds", "solve_seconds", "total_seconds")
#: Largest per-row matrix stack a solver without ``column_scales`` may be given (bytes).
ROW_MATRIX_BYTES = 2 << 30


class SolverError(RuntimeError):
    """A solver misbehaved (e.g. returned a sample that violates a fixed variable)."""


class ParameterError(TypeError):
    """Unknown or invalid solver parameter."""


class ParameterValueError(ParameterError, ValueError):
    """A solver parameter of the wrong kind of value (a ParameterError and a ValueError, as the
    parameter checks of the solvers raise ValueError for bad values)."""


def _check_numeric(name: str, params_cls: type, params: dict) -> None:
    """A parameter whose default is a number (not a bool) must be given a number: ``lr='abc'``
    (a CLI typo) is refused by name instead of failing in a comparison deep inside."""
    defaults = {f.name: f.default for f in dataclasses.fields(params_cls)}
    for key, value in params.items():
        d = defaults.get(key)
        if isinstance(d, bool) or not isinstance(d, (int, float)):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ParameterValueError(f"solver {name!r}: parameter {key} must be a number (default {d!r}), got {value!r}")


@dataclass(frozen=True)
class NoParams:
    """A solver without parameters."""


@dataclass
class SolveResult:
    """Samples and recomputed energies of one solve.

    Attributes:
        samples: (num_samples, rows, n) uint8.
        energies: (num_samples, rows) float64, recomputed from the problem (offsets included).
        status: one of :data:`STATUSES`.
        info: ``solver``, ``params``, ``seed`` and the :data:`TIMING_KEYS` (seconds), plus
            solver-specific entries.
        lower_bound: (rows,) float64 lower bound per row when the solver proves one, else None.
    """

    samples: np.ndarray
    energies: np.ndarray
    status: str
    info: dict[str, Any] = field(default_factory=dict)
    lower_bound: np.ndarray | None = None

    @property
    def best(self) -> np.ndarray:
        """(rows, n) uint8: for each row the sample of lowest energy (rows are independent
        problems, so the combination is itself a valid assignment)."""
        idx = np.argmin(self.energies, axis=0)
        return self.samples[idx, np.arange(self.samples.shape[1])]

    @property
    def best_energies(self) -> np.ndarray:
        """(rows,) lowest energy per row."""
        return self.energies.min(axis=0)

    @property
    def energy(self) -> float:
        """Total energy of :attr:`best` (sum over rows)."""
        return float(self.best_energies.sum())

    @property
    def seconds(self) -> float:
        return float(self.info["total_seconds"])


class Solver(abc.ABC):
    """Base class of all solvers.

    Capability flags (class attributes) are checked before any work:

    * ``exact``: results are proven optimal (status ``optimal``, lower bound = energy).
    * ``max_variables``: the most free variables per row the solver accepts (None: any).
    * ``needs_gpu``: requires CUDA.
    * ``required_modules``: importable modules the solver needs.
    * ``needs_space``: needs a layer problem (a rounding space), not a plain QUBO.

    And for the pipeline:

    * ``baseline``: the reference rounding others are measured against (``nearest``): kept as it
      is, never polished.
    * ``has_data_form``: the solver also optimises a layer from its calibration mini-batches
      (the pipeline's ``form="data"``, AdaRound's relaxation), with the same parameters.
    * ``batches_groups``: the groups of a grouped convolution, stacked into one problem with
      per-row matrices (:func:`qubo_round.problem.stack_rows`), are solved in one call, as
      fast as one group (the batched relaxations).
    * ``column_scales``: the solver takes layer problems with column scales (group-wise grids,
      :attr:`~qubo_round.problem.LayerQUBO.column_scaled`) as they are. Others receive the same
      problem with one matrix per row (:meth:`~qubo_round.problem.LayerQUBO.with_row_matrices`,
      refused beyond :data:`ROW_MATRIX_BYTES`); energies are always those of the given problem.
    * ``threaded``: the solve runs on torch's intra-op threads and gains from them on layer-sized
      problems (AdaRound's step: 1.3-1.9x with 2 threads on MiniLM's layers,
      ``benchmarks/results/adaround_throughput.md``): the pipeline gives its ``threads``
      parameter the run's ``threads``. Others keep their own setting (GPTQ: one BLAS thread,
      :meth:`~qubo_round.solvers.gptq.GPTQ.solve`).
    """

    name: ClassVar[str] = ""
    exact: ClassVar[bool] = False
    max_variables: ClassVar[int | None] = None
    needs_gpu: ClassVar[bool] = False
    required_modules: ClassVar[tuple[str, ...]] = ()
    needs_space: ClassVar[bool] = False
    baseline: ClassVar[bool] = False
    has_data_form: ClassVar[bool] = False
    batches_groups: ClassVar[bool] = False
    column_scales: ClassVar[bool] = False
    threaded: ClassVar[bool] = False
    Params: ClassVar[type] = NoParams

    def __init__(self, **params: Any) -> None:
        valid = [f.name for f in dataclasses.fields(self.Params)]
        unknown = sorted(set(params) - set(valid))
        if unknown:
            raise ParameterError(f"solver {self.name!r} has no parameter(s) {unknown}; "
                                 f"valid parameters: {valid or 'none'}")
        _check_numeric(self.name, self.Params, params)
        self.params = self.Params(**params)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params})"

    @classmethod
    def missing_modules(cls) -> list[str]:
        return [m for m in cls.required_modules if importlib.util.find_spec(m) is None]

    def max_free(self) -> int | None:
        """Free-variable limit per row for this instance (parameters may change it)."""
        return self.max_variables

    def check(self, problem: QUBOFamily) -> None:
        """Raise :class:`CapabilityError` if ``problem`` is beyond this solver."""
        if not isinstance(problem, QUBOFamily):
            raise TypeError(f"solvers take a QUBOFamily (LayerQUBO or DenseQUBO), got {type(problem).__name__}")
        missing = self.missing_modules()
        if missing:
            raise CapabilityError(f"solver {self.name!r} needs the module(s) {missing}; install them first")
        if self.needs_gpu:
            import torch
            if not torch.cuda.is_available():
                raise CapabilityError(f"solver {self.name!r} needs a CUDA GPU and none is available")
        if self.needs_space and problem.space is None:
            raise CapabilityError(f"solver {self.name!r} needs a layer rounding problem (it uses the "
                                  "fractional parts of W/s); this is a plain QUBO")
        limit = self.max_free()
        if limit is not None:
            worst = int(problem.num_free.max())
            if worst > limit:
                row = int(problem.num_free.argmax())
                raise CapabilityError(
                    f"solver {self.name!r} accepts at most {limit} free variables per row, but row "
                    f"{row} has {worst}; use a heuristic solver or split the problem")

    def solve(self, problem: QUBOFamily, *, seed: int | None = None, start: np.ndarray | None = None,
              time_limit: float | None = None) -> SolveResult:
        """Solve ``problem``.

        Args:
            problem: the QUBO family.
            seed: random seed (solvers are deterministic for a given seed).
            start: optional (rows, n) 0/1 start assignment for solvers that use one.
            time_limit: wall-clock budget in seconds (solvers stop and report ``time_limit``).
        """
        t0 = time.perf_counter()
        self.check(problem)
        if time_limit is not None and not time_limit > 0:
            raise ValueError(f"time_limit must be > 0 seconds, got {time_limit}")
        if start is not None:
            start = problem.check_samples(np.asarray(start), fixed=False).astype(np.uint8)
            if start.ndim != 2:
                raise ValueError("start must be one assignment of shape (rows, n)")
            start = problem.apply_fixed(start)
        rng = np.random.default_rng(seed)
        work = problem
        if isinstance(problem, LayerQUBO) and problem.column_scaled and not self.column_scales:
            work = problem.with_row_matrices(ROW_MATRIX_BYTES, who=f"solver {self.name!r}")
        t1 = time.perf_counter()
        samples, extra = self.sample(work, rng=rng, start=start, time_limit=time_limit)
        t2 = time.perf_counter()
        samples = np.asarray(samples)
        if samples.ndim == 2:
            samples = samples[None]
        samples = samples.astype(np.uint8)
        if samples.shape[1:] != problem.shape or (samples > 1).any():
            raise SolverError(f"solver {self.name!r} returned samples of shape {samples.shape}, "
                              f"expected (num_samples, {problem.shape[0]}, {problem.shape[1]}) binary")
        if (problem.fixed_mask & (samples != problem.fixed_value)).any():
            raise SolverError(f"solver {self.name!r} returned a sample that violates a fixed variable")
        energies = problem.energies(samples)
        extra = dict(extra)
        status = extra.pop("status", "optimal" if self.exact else "feasible")
        if status not in STATUSES:
            raise SolverError(f"solver {self.name!r} returned unknown status {status!r}")
        lower_bound = extra.pop("lower_bound", None)
        if self.exact and status == "optimal" and lower_bound is None:
            lower_bound = energies.min(axis=0)
        t3 = time.perf_counter()
        info = {"solver": self.name, "params": dataclasses.asdict(self.params), "seed": seed,
                "setup_seconds": t1 - t0, "solve_seconds": t2 - t1, "total_seconds": t3 - t0, **extra}
        return SolveResult(samples=samples, energies=energies, status=status, info=info,
                           lower_bound=lower_bound)

    @abc.abstractmethod
    def sample(self, problem: QUBOFamily, *, rng: np.random.Generator, start: np.ndarray | None,
               time_limit: float | None) -> tuple[np.ndarray, dict]:
        """Return ``(samples, extra)``: samples (num_samples, rows, n) or (rows, n) 0/1, and a
        dict that may hold ``status``, ``lower_bound`` (rows,) and solver-specific info."""
