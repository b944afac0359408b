"""Benchmark suites: named generators of :class:`Instance` objects.

A suite is a function ``generator(options) -> Iterable[Instance]`` registered under a unique name
with :func:`register_suite`; registering a second generator under a taken name raises. An
instance is cheap to ship to a worker: it names a file (``spec``, understood by
:func:`qubo_round.instances.load_instance`) and carries flat descriptors; :meth:`Instance.load`
reads the problem there, so workers never need the model the problem came from.
"""
from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from qubo_round.registry import Registry, UnknownNameError

log = logging.getLogger(__name__)

#: Descriptor columns every instance provides (missing values are None).
DESCRIPTOR_FIELDS = ("source", "set", "layer", "group", "bits", "hessian", "rows", "n", "free",
                     "max_free", "condition", "sense", "best_known")


class UnknownSuiteError(UnknownNameError):
    """No suite of that name."""


@dataclass(frozen=True)
class SuiteOptions:
    """Options shared by all suite generators.

    Attributes:
        data_dir: public instance directory (``best_known.csv``, ``orlib/``, ``gset/``); None:
            ``$QUBO_ROUND_DATA`` or ``../shared/data/qubo`` beside the repository.
        cache_dir: where generated problems (digits layers) are stored as ``.npz``.
        max_rows: layers with more rows are subsampled to this many rows (seeded).
        row_seed: seed of the row subsampling.
        bits: weight bit widths of the digits suites.
        samples: calibration samples of the digits suites.
        calib_seed: seed of the calibration batch.
        limit: keep only the first ``limit`` instances of each suite (None: all).
    """

    data_dir: Path | None = None
    cache_dir: Path = Path("bench-cache")
    max_rows: int = 16
    row_seed: int = 0
    bits: tuple[int, ...] = (2, 3, 4)
    samples: int = 256
    calib_seed: int = 0
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {self.max_rows}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1 (or None for all), got {self.limit}")
        if not self.bits or any(not 2 <= b <= 8 for b in self.bits):
            raise ValueError(f"bits must be a non-empty list of widths in 2..8, got {self.bits}")

    def content_key(self) -> dict[str, Any]:
        """The options that change an instance's content (not merely which instances exist)."""
        return {"max_rows": self.max_rows, "row_seed": self.row_seed, "samples": self.samples,
                "calib_seed": self.calib_seed}


@dataclass(frozen=True)
class Instance:
    """One benchmark problem.

    Attributes:
        suite: the suite that produced it.
        name: unique within the suite (``conv3-g1-b2``, ``bqp50-3``).
        spec: file spec for :func:`qubo_round.instances.load_instance` (absolute path, with
            ``#k`` for multi-instance files).
        descriptors: flat values, keys :data:`DESCRIPTOR_FIELDS`.
    """

    suite: str
    name: str
    spec: str
    descriptors: dict[str, Any] = field(default_factory=dict)

    def load(self):
        """The problem (a :class:`~qubo_round.problem.QUBOFamily`)."""
        from qubo_round.instances import load_instance
        return load_instance(self.spec)

    @property
    def key(self) -> str:
        return f"{self.suite}/{self.name}"


def describe_problem(problem, **extra: Any) -> dict[str, Any]:
    """Descriptors computed from a problem and its ``meta`` (``extra`` overrides)."""
    meta = problem.meta
    free = problem.num_free
    out = {k: None for k in DESCRIPTOR_FIELDS}
    out.update(source=meta.get("source"), set=meta.get("set"), layer=meta.get("layer"),
               group=meta.get("group"), bits=meta.get("bits"), hessian=meta.get("hessian"),
               rows=int(problem.rows), n=int(problem.n), free=int(free.sum()),
               max_free=int(free.max()), condition=meta.get("condition"),
               sense=meta.get("sense", "min"))
    out.update(extra)
    return out


SuiteGenerator = Callable[[SuiteOptions], Iterable[Instance]]


class SuiteRegistry(Registry[SuiteGenerator]):
    """Name -> generator (:class:`qubo_round.registry.Registry`); :meth:`register` is a decorator."""

    def __init__(self) -> None:
        super().__init__("benchmark suite", error=UnknownSuiteError)

    def register(self, name: str) -> Callable[[SuiteGenerator], SuiteGenerator]:  # type: ignore[override]
        """Decorator registering ``generator`` under ``name`` (names already taken raise)."""
        def deco(gen: SuiteGenerator) -> SuiteGenerator:
            if not callable(gen):
                raise TypeError(f"suite {name!r}: generator is not callable")
            Registry.register(self, name, gen)
            return gen
        return deco


#: The suite registry.
SUITES = SuiteRegistry()
register_suite = SUITES.register


def _ensure_builtin() -> None:
    from . import digits, public  # noqa: F401  (registration)


def available_suites() -> list[str]:
    """Registered suite names."""
    _ensure_builtin()
    return SUITES.names()


def get_suite(name: str) -> SuiteGenerator:
    """The generator of suite ``name``; :class:`UnknownSuiteError` lists the available ones."""
    _ensure_builtin()
    return SUITES.get(name)


def suite_instances(name: str, options: SuiteOptions) -> list[Instance]:
    """The instances of suite ``name`` (the first ``options.limit`` of them)."""
    gen = get_suite(name)
    items: Iterator[Instance] = iter(gen(options))
    if options.limit is not None:
        items = itertools.islice(items, options.limit)
    out = list(items)
    names = [i.name for i in out]
    if len(set(names)) != len(names):
        raise ValueError(f"suite {name!r} produced duplicate instance names")
    log.info("suite %s: %d instance(s)", name, len(out))
    return out
