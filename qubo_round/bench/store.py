"""The results CSV: one row per finished trial, appended and flushed as trials finish.

The header is written once. A run killed mid-write (even with SIGKILL) leaves at most one
partial last line; :class:`ResultStore` cuts it off before appending again, and
:meth:`ResultStore.done_keys` tells which trials need not run again.
"""
from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Any, Iterable

from .trial import COLUMNS, KEY_COLUMNS

log = logging.getLogger(__name__)


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float) and math.isnan(v):
        return ""
    return v


def read_rows(path: str | Path) -> list[dict[str, str]]:
    """All complete rows of a results CSV as string dicts (empty list if the file is absent)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        rows = []
        for row in reader:
            if None in row or any(v is None for v in row.values()):
                log.warning("%s, line %d: malformed row skipped", path, reader.line_num)
                continue
            rows.append(row)
    return rows


def row_key(row: dict[str, Any]) -> tuple[str, ...]:
    """The resume key of a row (strings)."""
    return tuple(str(row[c]) for c in KEY_COLUMNS)


class ResultStore:
    """Append-only results CSV with the fixed columns :data:`~.trial.COLUMNS`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair()
        self._fh = None
        self._writer = None

    def _repair(self) -> None:
        """Drop a partial last line (interrupted write) and check the header."""
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return
        data = self.path.read_bytes()
        if not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            log.warning("%s: dropping an incomplete last line (interrupted run)", self.path)
            with open(self.path, "r+b") as fh:
                fh.truncate(cut)
        with open(self.path, newline="") as fh:
            header = next(csv.reader(fh), None)
        if header is not None and tuple(header) != COLUMNS:
            raise ValueError(f"{self.path} has different columns than this version writes; "
                             "use a new output directory")

    def done_keys(self, retry_errors: bool = False) -> set[tuple[str, ...]]:
        """Keys of finished trials (without failed ones when ``retry_errors``)."""
        return {row_key(r) for r in read_rows(self.path) if not (retry_errors and r["error"])}

    def append(self, row: dict[str, Any]) -> None:
        """Write one row and flush it to the OS."""
        if self._fh is None:
            new = not self.path.is_file() or self.path.stat().st_size == 0
            self._fh = open(self.path, "a", newline="")
            self._writer = csv.DictWriter(self._fh, fieldnames=COLUMNS, extrasaction="raise")
            if new:
                self._writer.writeheader()
        self._writer.writerow({c: _cell(row.get(c)) for c in COLUMNS})
        self._fh.flush()

    def extend(self, rows: Iterable[dict[str, Any]]) -> None:
        for r in rows:
            self.append(r)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
