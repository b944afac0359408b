"""One registry helper for everything found by name: solvers, solver families, suites, studies, models.

A :class:`Registry` maps names to entries in registration order. Built-in entries can be
*lazy*: a table ``name -> module`` whose module registers the name when imported, so that
listing names imports nothing and looking one up imports only its module (the solver registry
uses this, so ``import qubo_round.solvers`` imports no solver, no relaxation and no torch).
Unknown names raise the registry's error, a :class:`UnknownNameError`, whose message lists
the names available.
"""
from __future__ import annotations

import importlib
from typing import Generic, Iterator, TypeVar

__all__ = ["Registry", "UnknownNameError"]

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A name no registry entry has (a KeyError whose message is not quoted)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Names -> entries of one kind.

    Args:
        kind: what the entries are, for messages (``"solver"``, ``"benchmark suite"``...).
        error: the :class:`UnknownNameError` subclass raised for unknown names.
        lazy: ``name -> module`` of built-in entries, imported on first use; the module must
            register ``name``.
        hint: appended to the unknown-name message (e.g. a command that lists the names).
    """

    def __init__(self, kind: str, *, error: type[UnknownNameError] = UnknownNameError,
                 lazy: dict[str, str] | None = None, hint: str = ""):
        self.kind, self.error, self.hint = kind, error, hint
        self._lazy = dict(lazy or {})
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        """Add ``entry`` under ``name``; a name already taken raises ValueError."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        if name in self._entries:
            raise ValueError(f"a {self.kind} named {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def names(self) -> list[str]:
        """Every name, built-in (lazy) ones first in table order, without importing anything."""
        return list(self._lazy) + [n for n in self._entries if n not in self._lazy]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._lazy

    def get(self, name: str) -> T:
        """The entry of ``name``, importing its module first when it is a lazy built-in."""
        if name not in self._entries and name in self._lazy:
            importlib.import_module(self._lazy[name])
            if name not in self._entries:
                raise RuntimeError(f"module {self._lazy[name]} did not register the {self.kind} {name!r}")
        if name not in self._entries:
            raise self.error(f"unknown {self.kind} {name!r}; available: {', '.join(self.names()) or 'none'}"
                             f"{self.hint}")
        return self._entries[name]

    __getitem__ = get

    def load_all(self) -> dict[str, T]:
        """Every entry (importing every lazy module), in :meth:`names` order."""
        return {n: self.get(n) for n in self.names()}

    def items(self) -> list[tuple[str, T]]:
        """``(name, entry)`` pairs of :meth:`load_all`."""
        return list(self.load_all().items())

    def __len__(self) -> int:
        return len(self.names())

    def copy(self) -> "Registry[T]":
        """An independent registry with the same entries (e.g. to register temporarily in a test)."""
        new: Registry[T] = Registry(self.kind, error=self.error, lazy=self._lazy, hint=self.hint)
        new._entries = dict(self._entries)
        return new
