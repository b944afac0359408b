"""Solvers of QUBO families: the interface, the registry, and the built-in solvers.

Installed as ``qubo_round.solvers``. The built-in solvers are imported on first use
(``get_solver``, ``solver_class``, ``describe``: :data:`registry.BUILTIN`); importing this
package imports none of them.
"""
from .base import (STATUSES, TIMING_KEYS, CapabilityError, ParameterError, SolveResult, Solver,
                   SolverError)
from .registry import (UnknownSolverError, available_families, available_solvers, describe, get_solver, register,
                       register_family, solver_class)

__all__ = ["STATUSES", "TIMING_KEYS", "CapabilityError", "ParameterError", "SolveResult", "Solver",
           "SolverError", "UnknownSolverError", "available_solvers", "describe", "get_solver",
           "register", "register_family", "solver_class", "available_families"]
