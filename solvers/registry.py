"""One registry of solvers by name, with named presets.

``get_solver("stochastic")``, ``get_solver("stochastic/best100")`` (a preset), or
``get_solver("stochastic", k=10)``. Unknown names and parameters raise.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .base import ParameterError, Solver


class UnknownSolverError(KeyError):
    """No solver or preset of that name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class SolverEntry:
    cls: type[Solver]
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)


_REGISTRY: dict[str, SolverEntry] = {}
#: Families of solvers named ``prefix:argument`` (e.g. ``dimod:TabuSampler``): prefix -> factory
#: ``factory(argument, **params) -> Solver``.
_FAMILIES: dict[str, Callable[..., Solver]] = {}


def register_family(prefix: str, factory: Callable[..., Solver]) -> None:
    """Register a family of solvers addressed as ``prefix:argument``."""
    if prefix in _FAMILIES:
        raise ValueError(f"a solver family {prefix!r} is already registered")
    _FAMILIES[prefix] = factory


def register(name: str, presets: dict[str, dict[str, Any]] | None = None):
    """Class decorator: register a :class:`Solver` subclass under ``name``."""
    def deco(cls: type[Solver]) -> type[Solver]:
        if name in _REGISTRY:
            raise ValueError(f"a solver named {name!r} is already registered ({_REGISTRY[name].cls.__name__})")
        if "/" in name:
            raise ValueError(f"solver names may not contain '/', got {name!r}")
        cls.name = name
        for pname, params in (presets or {}).items():
            try:
                cls(**params)
            except ParameterError as e:
                raise ValueError(f"preset {name}/{pname} is invalid: {e}") from e
        _REGISTRY[name] = SolverEntry(cls, dict(presets or {}))
        return cls
    return deco


def available_solvers() -> list[str]:
    """Registered solver names, in registration order (families are listed as ``prefix:``)."""
    return list(_REGISTRY)


def available_families() -> list[str]:
    """Registered solver-family prefixes (``get_solver("prefix:argument")``)."""
    return list(_FAMILIES)


#: ``"a>b"`` is the chain composite of the specs a and b (:mod:`qubo_round.solvers.composite`).
CHAIN_SEPARATOR = ">"


def solver_class(name: str) -> type[Solver]:
    if CHAIN_SEPARATOR in name:
        return _entry("chain").cls
    return _entry(name.split("/", 1)[0]).cls


def _entry(name: str) -> SolverEntry:
    if name not in _REGISTRY:
        raise UnknownSolverError(f"unknown solver {name!r}; available: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


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
                                     f"{', '.join(_FAMILIES) or 'none'}")
        if preset:
            raise UnknownSolverError(f"solver family {prefix!r} has no presets ({spec!r})")
        return _FAMILIES[prefix](arg, **params)
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
            "baseline": c.baseline, "available": not c.missing_modules(), "presets": sorted(entry.presets),
            "doc": (c.__doc__ or "").strip().splitlines()[0] if c.__doc__ else ""}
