"""Errors the core raises that the solvers share (re-exported by :mod:`qubo_round.solvers.base`)."""

__all__ = ["CapabilityError", "first_line"]


class CapabilityError(ValueError):
    """The problem or environment is beyond what the solver can do."""


def first_line(e: BaseException, limit: int = 200) -> str:
    """The first line of ``e``'s message (its type's name when empty), cut to ``limit``
    characters: what a one-line error quotes of a library's multi-line one."""
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:limit]
