"""One registry of solvers by name, with named presets.

``get_solver("stochastic")``, ``get_solver("stochastic/best100")`` (a preset), or
``get_solver("stochastic", k=10)``. Unknown names and parameters raise.

The built-in solvers are found through one ordered table, :data:`BUILTIN`, name -> module,
imported on first use (:class:`qubo_round.registry.Registry`): importing
``qubo_round.solvers`` imports no solver module, and the continuous relaxations (registered
from ``qubo_round.relaxations``) are imported only when asked for, so imports run one way,
core <- solvers <- relaxations. Third-party solvers register with :func:`register`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from qubo_round.registry import Registry, UnknownNameError

from .base import ParameterError, Solver

_S = "qubo_round.solvers."
_R = "qubo_round.relaxations."
#: Built-in solvers in listing order: name -> the module that registers it.
BUILTIN: dict[str, str] = {
    "nearest": _S + "simple", "floor": _S + "simple", "ceil": _S + "simple", "stochastic": _S + "simple",
    "exact": _S + "exact", "greedy": _S + "greedy", "anneal": _S + "anneal", "neal": _S + "neal",
    "tabu": _S + "tabu", "sdp": _S + "sdp", "cem": _S + "cem", "gptq": _S + "gptq", "its": _S + "its",
    "bnb": _S + "bnb", "adaround": _R + "adaround", "sigmoid-anneal": _R + "sigmoid_anneal", "ste": _R + "ste",
    "chain": _S + "composite", "polish": _S + "composite", "portfolio": _S + "composite",
}
#: Built-in solver families (``prefix:argument``): prefix -> module.
BUILTIN_FAMILIES: dict[str, str] = {"dimod": _S + "dimod_adapter"}


class UnknownSolverError(UnknownNameError):
    """No solver or preset of that name."""


@dataclass(frozen=True)
class SolverEntry:
    cls: type[Solver]
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)


_SOLVERS: Registry[SolverEntry] = Registry("solver", error=UnknownSolverError, lazy=BUILTIN)
#: Families of solvers named ``prefix:argument`` (e.g. ``dimod:TabuSampler``): prefix -> factory
#: ``factory(argument, **params) -> Solver``.
_FAMILIES: Registry[Callable[..., Solver]] = Registry("solver family", error=UnknownSolverError,
                                                      lazy=BUILTIN_FAMILIES)


def register_family(prefix: str, factory: Callable[..., Solver]) -> None:
    """Register a family of solvers addressed as ``prefix:argument``."""
    _FAMILIES.register(prefix, factory)


def register(name: str, presets: dict[str, dict[str, Any]] | None = None):
    """Class decorator: register a :class:`Solver` subclass under ``name``."""
    def deco(cls: type[Solver]) -> type[Solver]:
        if "/" in name or CHAIN_SEPARATOR in name or ":" in name:
            raise ValueError(f"solver names may not contain '/', '>' or ':', got {name!r}")
        cls.name = name
        for pname, params in (presets or {}).items():
            try:
                cls(**params)
            except ParameterError as e:
                raise ValueError(f"preset {name}/{pname} is invalid: {e}") from e
        _SOLVERS.register(name, SolverEntry(cls, dict(presets or {})))
        return cls
    return deco


def available_solvers() -> list[str]:
    """Solver names: the built-in ones in :data:`BUILTIN` order, then those registered since
    (imports nothing; families are listed by :func:`available_families`)."""
    return _SOLVERS.names()


def available_families() -> list[str]:
    """Solver-family prefixes (``get_solver("prefix:argument")``)."""
    return _FAMILIES.names()


#: ``"a>b"`` is the chain composite of the specs a and b (:mod:`qubo_round.solvers.composite`).
CHAIN_SEPARATOR = ">"


def solver_class(name: str) -> type[Solver]:
    if CHAIN_SEPARATOR in name:
        return _entry("chain").cls
    return _entry(name.split("/", 1)[0]).cls


def _entry(name: str) -> SolverEntry:
    return _SOLVERS.get(name)


def get_solver(spec: str, **params: Any) -> Solver:
    """Instantiate ``name`` or ``name/preset``; keyword ``params`` override the preset's.
    ``"a>b"`` chains the specs a and b (each warm-started from the one before)."""
    if CHAIN_SEPARATOR in spec:
        if params:
            raise ParameterError(f"a chain {spec!r} takes no parameters; give each stage its own "
                                 f"preset, or use get_solver('chain', solvers=(...))")
        return _entry("chain").cls(solvers=tuple(spec.split(CHAIN_SEPARATOR)))
    name, _, preset = spec.partition("/")
    prefix, colon, arg = name.partition(":")
    if colon:
        if prefix not in _FAMILIES:
            raise UnknownSolverError(f"unknown solver family {prefix!r} in {spec!r}; families: "
                                     f"{', '.join(_FAMILIES.names()) or 'none'}")
        if preset:
            raise UnknownSolverError(f"solver family {prefix!r} has no presets ({spec!r})")
        return _FAMILIES.get(prefix)(arg, **params)
    entry = _entry(name)
    base: dict[str, Any] = {}
    if preset:
        if preset not in entry.presets:
            raise UnknownSolverError(f"solver {name!r} has no preset {preset!r}; presets: "
                                     f"{', '.join(entry.presets) or 'none'}")
        base = dict(entry.presets[preset])
    return entry.cls(**{**base, **params})


def describe(name: str) -> dict[str, Any]:
    """Capability flags and presets of a registered solver."""
    entry = _entry(name)
    c = entry.cls
    return {"name": name, "exact": c.exact, "max_variables": c.max_variables, "needs_gpu": c.needs_gpu,
            "required_modules": list(c.required_modules), "needs_space": c.needs_space,
            "baseline": c.baseline, "has_data_form": c.has_data_form, "batches_groups": c.batches_groups, "column_scales": c.column_scales, "threaded": c.threaded,
            "available": not c.missing_modules(), "presets": sorted(entry.presets),
            "doc": (c.__doc__ or "").strip().splitlines()[0] if c.__doc__ else ""}
