"""Solvers of QUBO families: the interface, the registry, and the built-in solvers.

Installed as ``qubo_round.solvers``. Importing this package registers the built-in solvers.
"""
from .base import (STATUSES, TIMING_KEYS, CapabilityError, ParameterError, SolveResult, Solver,
                   SolverError)
from .registry import (UnknownSolverError, available_families, available_solvers, describe, get_solver, register,
                       register_family, solver_class)
from . import simple, exact, greedy, anneal, neal, tabu, dimod_adapter, sdp, cem, gptq, its, bnb  # noqa: F401,E402
from qubo_round.relaxations import adaround, sigmoid_anneal, ste  # noqa: F401,E402  (registration)
from . import composite  # noqa: F401,E402  (last: its presets name the solvers above)

__all__ = ["STATUSES", "TIMING_KEYS", "CapabilityError", "ParameterError", "SolveResult", "Solver",
           "SolverError", "UnknownSolverError", "available_solvers", "describe", "get_solver",
           "register", "register_family", "solver_class", "available_families"]
