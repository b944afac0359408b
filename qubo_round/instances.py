"""Readers of public QUBO / Max-Cut benchmark instances (see ``shared/data/qubo/README.md``).

Every reader returns :class:`~qubo_round.problem.DenseQUBO` objects in **minimisation** form,
``E(x) = x^T Q x + offset`` with ``Q`` (n, n) symmetric and the linear terms on its diagonal.
All public sets here are *maximisation* problems, so each instance is stored negated and carries
``meta = {"name", "set", "sense": "max", "source_file"}``; then
``problem.objective(problem.energy(x)) == -energy`` is the instance's own (maximised) objective
and the optimum energy is ``-best_known``.

Formats:

* OR-Library Beasley ``bqpN.txt`` (:func:`read_bqp`): several instances per file, upper-triangle
  entries ``i j q`` (1-based); the maximised objective is ``x^T Qb x`` with ``Qb`` the full
  symmetric matrix, i.e. every off-diagonal line counts **twice**.
* qbsolv ``.qubo`` (:func:`read_gka`): ``p qubo topo maxNodes nNodes nCouplers`` header, 0-based
  ``i i w`` node lines and ``i j w`` coupler lines, coupler ``w = 2 q_ij``.
* rudy / Gset max-cut graphs (:func:`read_gset`): ``n m`` then ``i j w`` edges (1-based); as a
  QUBO ``Q_ii = sum_j w_ij``, ``Q_ij = -w_ij``, so ``x^T Q x`` is the cut weight of
  ``S = {i : x_i = 1}`` (see :func:`cut_value`).

Invalid content raises :class:`ValueError` naming the file and the line.
"""
from __future__ import annotations

import csv
import logging
import os
import re
from pathlib import Path
from typing import overload

import numpy as np

from .problem import DenseQUBO, QUBOFamily

log = logging.getLogger(__name__)

__all__ = ["read_bqp", "read_gka", "read_gset", "planar_graph", "cut_value", "load_instance", "best_known",
           "gka_name", "toroidal_grid", "DATA_ENV", "PACKAGE_DATA"]

#: Environment variable naming the default data directory searched by :func:`load_instance`.
DATA_ENV = "QUBO_ROUND_DATA"
#: The public instances shipped inside the package (a copy of the project's shared data folder:
#: bqp, gka, Gset G1-G5 with best_known.csv; provenance in its README.md).
PACKAGE_DATA = Path(__file__).resolve().parent / "data" / "qubo"
#: Most variables a text instance may declare: the readers build a dense (n, n) float64 matrix
#: (20000: 3.2 GB), so a header like ``1000000 0`` is refused before allocating 7 TiB.
MAX_DENSE_VARIABLES = 20000

PathLike = str | os.PathLike

# bqpgka_K.qubo -> gka name: (first K, last K, letter) per group, numbered from 1 within a group.
_GKA_GROUPS = ((1, 8, "a"), (9, 18, "b"), (19, 25, "c"), (26, 35, "d"), (36, 40, "e"), (41, 45, "f"))


# --------------------------------------------------------------------------------------------
# Tokenising with line numbers
# --------------------------------------------------------------------------------------------

class _Tokens:
    """Whitespace-separated tokens of some lines of a file, consumed in order.

    Numbers are converted in blocks with numpy (fast); the token -> line map is only built
    when an error has to name a line.
    """

    def __init__(self, path: Path, lines: list[str], linenos: list[int]) -> None:
        self.path = path
        self.lines = lines
        self.linenos = linenos  # original 1-based line number of each kept line
        self.tokens = " ".join(lines).split()
        self.pos = 0
        self._cum: np.ndarray | None = None

    # -- error helpers ------------------------------------------------------------------------
    def line_of(self, tok: int) -> int:
        """Original 1-based line number of token index ``tok`` (last line if past the end)."""
        if not self.lines:
            return self.linenos[-1] if self.linenos else 0
        if self._cum is None:
            self._cum = np.cumsum([len(s.split()) for s in self.lines])
        idx = int(np.searchsorted(self._cum, tok, side="right"))
        return self.linenos[min(idx, len(self.lines) - 1)]

    def error(self, tok: int, msg: str) -> ValueError:
        return ValueError(f"{self.path}, line {self.line_of(tok)}: {msg}")

    # -- consuming ----------------------------------------------------------------------------
    @property
    def remaining(self) -> int:
        return len(self.tokens) - self.pos

    def floats(self, count: int, what: str) -> np.ndarray:
        """Next ``count`` tokens as a (count,) float64 array; errors name ``what`` was read."""
        if self.remaining < count:
            last = self.linenos[-1] if self.linenos else 0
            raise ValueError(f"{self.path}, line {last}: file ends while reading {what}: "
                             f"expected {count} more numbers, found {self.remaining} (truncated file?)")
        chunk = self.tokens[self.pos:self.pos + count]
        try:
            vals = np.array(chunk, dtype=np.float64)
        except ValueError:
            bad = next(i for i, t in enumerate(chunk) if not _is_float(t))
            raise self.error(self.pos + bad, f"non-numeric token {chunk[bad]!r} in {what}") from None
        if not np.isfinite(vals).all():
            bad = int(np.flatnonzero(~np.isfinite(vals))[0])
            raise self.error(self.pos + bad, f"non-finite value {chunk[bad]!r} in {what}")
        self.pos += count
        return vals

    def ints(self, count: int, what: str) -> np.ndarray:
        """Next ``count`` tokens as (count,) int64; non-integral values are errors."""
        start = self.pos
        vals = self.floats(count, what)
        bad = np.flatnonzero(vals != np.round(vals))
        if bad.size:
            t = start + int(bad[0])
            raise self.error(t, f"expected an integer in {what}, got {self.tokens[t]!r}")
        return vals.astype(np.int64)

    def table(self, rows: int, what: str) -> tuple[np.ndarray, int]:
        """Next ``rows`` triples ``i j w`` as a (rows, 3) float64 array, and its first token index."""
        start = self.pos
        return self.floats(3 * rows, what).reshape(rows, 3), start

    def skip(self, count: int, what: str) -> None:
        """Advance ``count`` tokens without converting them (still detects truncation)."""
        if self.remaining < count:
            self.floats(count, what)  # raises the truncation error
        self.pos += count

    def expect_end(self, what: str) -> None:
        """Raise if tokens are left after ``what``."""
        if self.remaining:
            raise self.error(self.pos, f"unexpected extra data {self.tokens[self.pos]!r} after {what}")


def _is_float(tok: str) -> bool:
    try:
        float(tok)
    except ValueError:
        return False
    return True


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        raise FileNotFoundError(f"instance file not found: {path}") from None
    return text.splitlines()


def _check_indices(tok: _Tokens, table: np.ndarray, start: int, lo: int, hi: int, what: str) -> np.ndarray:
    """Validate integer indices in columns 0-1 of ``table`` (rows, 3) lie in ``[lo, hi]``.

    Returns the (rows, 2) int64 indices shifted to 0-based (``- lo``).
    """
    ij = table[:, :2]
    bad_int = ij != np.round(ij)
    bad_range = (ij < lo) | (ij > hi)
    bad = np.flatnonzero((bad_int | bad_range).any(axis=1))
    if bad.size:
        r = int(bad[0])
        col = int(np.flatnonzero((bad_int | bad_range)[r])[0])
        t = start + 3 * r + col
        raise tok.error(t, f"variable index {tok.tokens[t]!r} in {what} is not an integer in [{lo}, {hi}]")
    return ij.astype(np.int64) - lo


def _symmetric_from_entries(n: int, i: np.ndarray, j: np.ndarray, diag_w: np.ndarray,
                            pair_w: np.ndarray) -> np.ndarray:
    """(n, n) symmetric matrix with ``diag_w`` added at ``(i, i)`` where ``i == j`` and
    ``pair_w`` added at both ``(i, j)`` and ``(j, i)`` where ``i != j`` (duplicates accumulate).

    ``diag_w`` and ``pair_w`` are (m,) arrays aligned with ``i`` and ``j``.
    """
    Q = np.zeros((n, n))
    on = i == j
    np.add.at(Q, (i[on], i[on]), diag_w[on])
    off = ~on
    np.add.at(Q, (i[off], j[off]), pair_w[off])
    np.add.at(Q, (j[off], i[off]), pair_w[off])
    return Q


def _max_instance(Q_max: np.ndarray, name: str, set_name: str, path: Path, **extra) -> DenseQUBO:
    """Wrap a maximisation matrix ``Q_max`` as the minimisation DenseQUBO ``-Q_max``."""
    meta = {"name": name, "set": set_name, "sense": "max", "source_file": str(path), **extra}
    return DenseQUBO(Q=np.negative(Q_max) + 0.0, meta=meta)  # + 0.0 turns -0.0 into 0.0


# --------------------------------------------------------------------------------------------
# OR-Library Beasley bqpN.txt
# --------------------------------------------------------------------------------------------

@overload
def read_bqp(path: PathLike, index: None = None) -> list[DenseQUBO]: ...


@overload
def read_bqp(path: PathLike, index: int) -> DenseQUBO: ...


def read_bqp(path: PathLike, index: int | None = None) -> list[DenseQUBO] | DenseQUBO:
    """Read an OR-Library ``bqpN.txt`` multi-instance file.

    Args:
        path: the file (``K``, then per instance ``n nnz`` and ``nnz`` lines ``i j q``, 1-based).
        index: 1-based instance number (file order), or None for all instances.

    Returns:
        The instance ``bqpN-index`` or the list of all K instances, each a minimisation
        DenseQUBO with diagonal ``-q_ii`` and ``Q_ij = Q_ji = -q_ij`` (pair coefficient
        ``-2 q_ij``): every off-diagonal line counts twice in the maximised objective.
        Variables never listed (bqp50-6 has no entry for variable 50) are zero rows; ``n`` is
        always the header value.

    Raises:
        ValueError: invalid content (naming file and line) or ``index`` not in ``1..K``.
    """
    path = Path(path)
    lines = _read_lines(path)
    tok = _Tokens(path, lines, list(range(1, len(lines) + 1)))
    stem = path.name.removesuffix(".txt")
    count = int(tok.ints(1, "the instance count K")[0])
    if count < 1:
        raise tok.error(0, f"instance count must be positive, got {count}")
    if index is not None:
        _check_selector(index, count, path)
    out: list[DenseQUBO] = []
    last = count if index is None else index
    for k in range(1, last + 1):
        what = f"instance {k} of {count}"
        n, nnz = (int(v) for v in tok.ints(2, f"the 'n nnz' header of {what}"))
        if n < 1 or nnz < 0:
            raise tok.error(tok.pos - 2, f"invalid header 'n nnz' = {n} {nnz} of {what}")
        if n > MAX_DENSE_VARIABLES:
            raise tok.error(tok.pos - 2, _too_large(n))
        if index is not None and k < index:
            tok.skip(3 * nnz, f"the entries of {what}")
            continue
        table, start = tok.table(nnz, f"the {nnz} entries 'i j q' of {what}")
        ij = _check_indices(tok, table, start, 1, n, f"entry of {what} (n = {n})")
        Q = _symmetric_from_entries(n, ij[:, 0], ij[:, 1], table[:, 2], table[:, 2])
        out.append(_max_instance(Q, f"{stem}-{k}", "orlib_bqp", path, index=k))
        log.debug("read %s-%d: n=%d, %d entries", stem, k, n, nnz)
    if index is None:
        tok.expect_end(f"the last of {count} instances")
        return out
    return out[-1]


def _check_selector(index: int, count: int, path: Path) -> None:
    if not isinstance(index, (int, np.integer)) or isinstance(index, bool) or not 1 <= index <= count:
        raise ValueError(f"{path}: instance #{index} out of range: the file holds {count} instances "
                         f"(valid: 1..{count})")


# --------------------------------------------------------------------------------------------
# qbsolv .qubo (gka set)
# --------------------------------------------------------------------------------------------

def gka_name(k: int) -> str | None:
    """Name of ``bqpgka_k.qubo`` in the gka set (``1 -> 'gka1a'``, ``9 -> 'gka1b'``...), or None."""
    for first, last, letter in _GKA_GROUPS:
        if first <= k <= last:
            return f"gka{k - first + 1}{letter}"
    return None


def _qubo_name(path: Path) -> tuple[str, str]:
    """(name, set) of a .qubo file: gka names for ``bqpgka_K.qubo``, else the file stem."""
    m = re.fullmatch(r"bqpgka_(\d+)\.qubo", path.name)
    name = gka_name(int(m.group(1))) if m else None
    return (name, "orlib_gka") if name else (path.stem, "qbsolv")


def read_gka(path: PathLike, sense: str = "max") -> DenseQUBO:
    """Read a qbsolv ``.qubo`` file (the OR-Library gka set).

    Format: comment lines starting with ``c``; header ``p qubo topology maxNodes nNodes
    nCouplers``; then ``nNodes`` lines ``i i w`` and ``nCouplers`` lines ``i j w`` (0-based,
    ``i < j``), coupler ``w = 2 q_ij``. The file holds ``E(x) = sum_i w_ii x_i +
    sum_{i<j} w_ij x_i x_j`` over ``n = maxNodes`` variables.

    Args:
        path: the file. ``bqpgka_K.qubo`` gets its gka name (README mapping), others the stem.
        sense: the sense of ``E`` in this file: ``"max"`` (the gka set; stored as ``-E``) or
            ``"min"`` (qbsolv's default; stored as ``E``).

    Returns:
        DenseQUBO (1, n) in minimisation form with ``meta['sense'] = sense``.
    """
    if sense not in ("max", "min"):
        raise ValueError(f"sense must be 'max' or 'min', got {sense!r}")
    path = Path(path)
    lines = _read_lines(path)
    kept = [(no, s) for no, s in enumerate(lines, 1) if s.strip() and not s.lstrip().startswith("c")]
    if not kept:
        raise ValueError(f"{path}, line {len(lines)}: no 'p qubo' header line (empty file?)")
    head_no, head = kept[0]
    n, n_nodes, n_couplers = _qubo_header(path, head_no, head)
    if n > MAX_DENSE_VARIABLES:
        raise ValueError(f"{path}, line {head_no}: {_too_large(n)}")
    tok = _Tokens(path, [s for _, s in kept[1:]], [no for no, _ in kept[1:]] or [head_no])
    m = n_nodes + n_couplers
    table, start = tok.table(m, f"the {n_nodes} node and {n_couplers} coupler lines 'i j w'")
    tok.expect_end(f"the {m} node/coupler lines announced in the header (line {head_no})")
    ij = _check_indices(tok, table, start, 0, n - 1, f"node/coupler line (maxNodes = {n})")
    w = table[:, 2]
    Q = _symmetric_from_entries(n, ij[:, 0], ij[:, 1], w, w / 2.0)
    name, set_name = _qubo_name(path)
    if sense == "max":
        return _max_instance(Q, name, set_name, path)
    return DenseQUBO(Q=Q, meta={"name": name, "set": set_name, "sense": "min", "source_file": str(path)})


def _qubo_header(path: Path, lineno: int, line: str) -> tuple[int, int, int]:
    """Parse ``p qubo topology maxNodes nNodes nCouplers`` -> (maxNodes, nNodes, nCouplers)."""
    parts = line.split()
    if len(parts) != 6 or parts[0] != "p" or parts[1] != "qubo":
        raise ValueError(f"{path}, line {lineno}: expected the header 'p qubo topology maxNodes "
                         f"nNodes nCouplers' before any data, got {line.strip()!r}")
    try:
        n, n_nodes, n_couplers = (int(p) for p in parts[3:])
    except ValueError:
        raise ValueError(f"{path}, line {lineno}: non-integer count in header {line.strip()!r}") from None
    if n < 1 or n_nodes < 0 or n_couplers < 0:
        raise ValueError(f"{path}, line {lineno}: invalid counts in header {line.strip()!r}")
    return n, n_nodes, n_couplers


# --------------------------------------------------------------------------------------------
# Gset / rudy max-cut graphs
# --------------------------------------------------------------------------------------------

def read_gset(path: PathLike) -> DenseQUBO:
    """Read a rudy-format max-cut graph (Gset) as a max-cut QUBO.

    Format: ``n m``, then ``m`` lines ``i j w`` (1-based vertices). With ``x_i = [i in S]`` the
    cut weight is ``x^T Qc x`` with ``Qc_ii = sum_j w_ij`` and ``Qc_ij = Qc_ji = -w_ij``; the
    returned minimisation QUBO is ``-Qc`` with ``meta['sense'] = 'max'``, so
    ``objective(energy(x)) == cut_value(meta['edges'], x)``. Self-loops never cross a cut: they
    are kept in ``meta['edges']`` but contribute nothing to ``Q``.

    Returns:
        DenseQUBO (1, n) with ``meta['edges']`` the (m, 3) float64 array ``(i, j, w)`` with
        **0-based** vertices, and ``meta['set'] = 'gset'``.
    """
    path = Path(path)
    lines = _read_lines(path)
    tok = _Tokens(path, lines, list(range(1, len(lines) + 1)))
    n, m = (int(v) for v in tok.ints(2, "the 'n m' header"))
    if n < 1 or m < 0:
        raise tok.error(0, f"invalid header 'n m' = {n} {m}")
    if n > MAX_DENSE_VARIABLES:
        raise tok.error(0, _too_large(n))
    table, start = tok.table(m, f"the {m} edge lines 'i j w'")
    tok.expect_end(f"the {m} edges announced in the header")
    ij = _check_indices(tok, table, start, 1, n, f"edge line (n = {n})")
    loops = ij[:, 0] == ij[:, 1]
    if loops.any():
        log.warning("%s: %d self-loop(s) ignored (they never cross a cut)", path, int(loops.sum()))
    Q = _cut_matrix(n, ij[~loops, 0], ij[~loops, 1], table[~loops, 2])
    edges = np.column_stack([ij.astype(np.float64), table[:, 2]])
    return _max_instance(Q, path.name.removesuffix(".txt"), "gset", path, edges=edges)


def _too_large(n: int) -> str:
    return (f"{n} variables would need a dense {n} x {n} matrix ({8 * n * n / 2**30:.3g} GiB); the text "
            f"readers take at most {MAX_DENSE_VARIABLES} (qubo_round.instances.MAX_DENSE_VARIABLES)")


def _cut_matrix(n: int, i: np.ndarray, j: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``Qc`` with ``x^T Qc x`` the weight of the cut ``{i : x_i = 1}`` (no self-loops)."""
    Q = np.zeros((n, n))
    np.add.at(Q, (i, i), w)
    np.add.at(Q, (j, j), w)
    np.add.at(Q, (i, j), -w)
    np.add.at(Q, (j, i), -w)
    return Q


def toroidal_grid(rows: int, cols: int, *, weights: str = "unit", seed: int = 0) -> DenseQUBO:
    """Max-cut on a ``rows x cols`` toroidal grid (each vertex joined to its four neighbours,
    wrapping around), the sparse graphs of the Gset kind (G48-G50: unit weights, G62 on: +-1).

    ``weights="unit"``: every edge weight 1; with both sides even the torus is bipartite and the
    maximum cut is every edge, ``2 rows cols`` (``meta['optimum']``), a known target for any
    size. ``weights="pm1"``: independent uniform +-1 weights from ``seed`` (a 2D spin glass; no
    optimum is known). Vertex ``(r, c)`` is ``r * cols + c``.

    Returns:
        DenseQUBO with ``meta['sense'] = 'max'``, ``meta['edges']`` (m, 3) 0-based, and
        ``meta['optimum']`` when known.
    """
    if rows < 3 or cols < 3:
        raise ValueError(f"toroidal_grid needs rows and cols >= 3 (no double edges), got {rows} x {cols}")
    if weights not in ("unit", "pm1"):
        raise ValueError(f"weights must be 'unit' or 'pm1', got {weights!r}")
    v = np.arange(rows * cols).reshape(rows, cols)
    i = np.concatenate([v.ravel(), v.ravel()])
    j = np.concatenate([np.roll(v, -1, axis=1).ravel(), np.roll(v, -1, axis=0).ravel()])
    w = np.ones(len(i)) if weights == "unit" else np.random.default_rng(seed).choice([-1.0, 1.0], size=len(i))
    extra: dict = {"edges": np.column_stack([i, j, w]).astype(np.float64)}
    if weights == "unit" and rows % 2 == 0 and cols % 2 == 0:
        extra["optimum"] = float(len(i))
    name = f"torus{rows}x{cols}-{weights}" + (f"-s{seed}" if weights == "pm1" else "")
    return _max_instance(_cut_matrix(rows * cols, i, j, w), name, "generated", Path("<generated>"), **extra)


def planar_graph(n: int, *, weights: str = "pm1", seed: int = 0) -> DenseQUBO:
    """Max-cut on a random planar graph: the Delaunay triangulation of ``n`` uniform points in
    the unit square (a maximal-like planar graph, average degree just under 6), with unit or
    uniform +-1 weights, all from ``seed``. Gset's "planar" G14-G17 and G51-G54 (rudy's
    generator) are unions of two such graphs on the same vertices (average degree ~11.7): build
    them as two seeds' edges summed if needed.

    No optimum is known (planar max-cut is polynomial by matching, not implemented here). Edges
    are listed once, ``i < j``, sorted; vertex order is the points' order.

    Returns:
        DenseQUBO with ``meta['sense'] = 'max'`` and ``meta['edges']`` (m, 3) 0-based.
    """
    from scipy.spatial import Delaunay

    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 4:
        raise ValueError(f"planar_graph needs an integer n >= 4 points, got {n!r}")
    if weights not in ("unit", "pm1"):
        raise ValueError(f"weights must be 'unit' or 'pm1', got {weights!r}")
    rng = np.random.default_rng(seed)
    tri = Delaunay(rng.random((int(n), 2))).simplices
    e = np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [0, 2]]])
    e = np.unique(np.sort(e, axis=1), axis=0)
    i, j = e[:, 0], e[:, 1]
    w = np.ones(len(i)) if weights == "unit" else rng.choice([-1.0, 1.0], size=len(i))
    name = f"planar{n}-{weights}-s{seed}"
    return _max_instance(_cut_matrix(int(n), i, j, w), name, "generated", Path("<generated>"),
                         edges=np.column_stack([i, j, w]).astype(np.float64))


def cut_value(edges: np.ndarray, x: np.ndarray) -> float | np.ndarray:
    """Weight of the cut ``S = {i : x_i = 1}``.

    Args:
        edges: (m, 3) ``(i, j, w)`` with 0-based vertex indices (as ``meta['edges']``).
        x: (n,) 0/1 assignment, or (..., n) several.

    Returns:
        ``sum of w_ij over edges with x_i != x_j``: a float for (n,) input, else a (...,) array.
    """
    edges = np.asarray(edges, dtype=np.float64).reshape(-1, 3)
    x = np.asarray(x)
    i, j = edges[:, 0].astype(np.int64), edges[:, 1].astype(np.int64)
    crossing = x[..., i] != x[..., j]
    cut = crossing.astype(np.float64) @ edges[:, 2]
    return float(cut) if x.ndim == 1 else cut


# --------------------------------------------------------------------------------------------
# Spec resolution and format detection
# --------------------------------------------------------------------------------------------

def _split_spec(spec: str | os.PathLike) -> tuple[str, int | None]:
    """``'dir/bqp50.txt#3'`` -> ``('dir/bqp50.txt', 3)``; no ``#`` -> ``(spec, None)``."""
    s = os.fspath(spec)
    if "#" not in s or Path(s).exists():
        return s, None
    base, _, sel = s.rpartition("#")
    if not re.fullmatch(r"[+-]?\d+", sel.strip()):
        raise ValueError(f"instance selector in {s!r} must be '#k' with an integer k (1-based), got '#{sel}'")
    return base, int(sel)


def _named_instance(spec: str) -> tuple[str, int | None] | None:
    """A published instance name as the file spec holding it: ``bqp50-3`` -> ``('bqp50.txt', 3)``,
    ``G1`` -> ``('G1.txt', None)``, ``gka1b`` -> its ``bqpgka_K.qubo``; None for anything else
    (or when a file of that name exists)."""
    if Path(spec).exists() or os.sep in spec:
        return None
    m = re.fullmatch(r"bqp(\d+)-(\d+)", spec)
    if m:
        return f"bqp{m[1]}.txt", int(m[2])
    if re.fullmatch(r"G\d+", spec):
        return f"{spec}.txt", None
    for k in range(1, _GKA_GROUPS[-1][1] + 1):
        if gka_name(k) == spec:
            return f"bqpgka_{k}.qubo", None
    return None


def _default_data_dir(data_dir: PathLike | None) -> Path | None:
    """``data_dir``, else ``$QUBO_ROUND_DATA``, else the instances shipped in the package."""
    if data_dir is not None:
        return Path(data_dir)
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    return PACKAGE_DATA if (PACKAGE_DATA / "best_known.csv").is_file() else None


def _resolve(path_str: str, data_dir: Path | None) -> Path:
    """The existing file for ``path_str``, searching below ``data_dir`` when it does not exist."""
    path = Path(path_str).expanduser()
    if path.is_file():
        return path
    looked = [str(path.resolve())]
    if data_dir is not None:
        direct = data_dir / path_str
        if direct.is_file():
            return direct
        looked.append(str(direct))
        hits = sorted(p for p in data_dir.rglob(path.name) if p.is_file()) if data_dir.is_dir() else []
        if len(path.parts) > 1:  # prefer hits that end with the whole relative path
            tail = [p for p in hits if p.parts[-len(path.parts):] == path.parts]
            hits = tail or hits
        if len(hits) == 1:
            log.debug("resolved %s to %s", path_str, hits[0])
            return hits[0]
        if len(hits) > 1:
            raise FileNotFoundError(f"instance {path_str!r} is ambiguous below {data_dir}: "
                                    + ", ".join(map(str, hits)))
        looked.append(f"every {path.name!r} below {data_dir}"
                      + ("" if data_dir.is_dir() else " (not a directory)")
                      + f" (another folder: pass data_dir or set ${DATA_ENV})")
    else:
        looked.append(f"no data directory (pass data_dir or set ${DATA_ENV})")
    raise FileNotFoundError(f"instance file {path_str!r} not found; looked at: " + "; ".join(looked))


def _detect_format(path: Path) -> str:
    """One of ``'npz'``, ``'qubo'``, ``'bqp'``, ``'gset'``: by file name, else by first line."""
    name = path.name
    if name.endswith(".npz"):
        return "npz"
    if name.endswith(".qubo"):
        return "qubo"
    if re.fullmatch(r"bqp\d+.*\.txt", name):
        return "bqp"
    if re.fullmatch(r"G\d+(\.txt|\.rud)?", name):
        return "gset"
    with open(path, encoding="ascii", errors="replace") as fh:
        first = next((s for s in fh if s.strip()), "")
    parts = first.split()
    if parts and parts[0] in ("c", "p"):
        return "qubo"
    if len(parts) == 1 and parts[0].isdigit():
        return "bqp"
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        return "gset"
    raise ValueError(f"cannot tell the format of {path}: expected a .npz problem, a qbsolv .qubo "
                     "file, an OR-Library bqpN.txt file (first line: instance count) or a rudy/Gset "
                     f"graph (first line: 'n m'); its first line is {first.strip()[:60]!r}")


def load_instance(spec: str | os.PathLike, data_dir: PathLike | None = None) -> QUBOFamily:
    """Load one instance from a path spec.

    Args:
        spec: a published name (``bqp50-3``, ``gka1b``, ``G1``), or a file path, optionally
            ``path#k`` to pick instance k (1-based) of a
            multi-instance OR-Library file (``bqp50.txt#3``). Formats are detected from the
            name (``bqp*.txt``, ``*.qubo``, ``G<N>.txt``, ``*.npz``) or else from the first line.
        data_dir: searched recursively for the file name when ``spec`` does not exist;
            defaults to ``$QUBO_ROUND_DATA``, else the instances shipped in the package
            (:data:`PACKAGE_DATA`).

    Returns:
        A minimisation :class:`DenseQUBO` for the text formats (``meta['sense']`` gives the
        instance's own sense); for ``.npz`` whatever :func:`qubo_round.io.load_problem` stored.

    Raises:
        FileNotFoundError: the file was not found (the message lists where it looked).
        ValueError: bad ``#k`` (out of range, or on a single-instance format), unknown format,
            or invalid content.
    """
    path_str, sel = _named_instance(os.fspath(spec)) or _split_spec(spec)
    path = _resolve(path_str, _default_data_dir(data_dir))
    fmt = _detect_format(path)
    if fmt == "bqp":
        if sel is None:
            items = read_bqp(path)
            if len(items) != 1:
                raise ValueError(f"{path} holds {len(items)} instances; pick one with "
                                 f"'{path_str}#k', k in 1..{len(items)}")
            return items[0]
        return read_bqp(path, sel)
    if sel is not None:
        raise ValueError(f"'#{sel}' selects an instance of a multi-instance file, but {path} "
                         f"({fmt} format) holds a single instance; drop the '#{sel}'")
    if fmt == "qubo":
        return read_gka(path)
    if fmt == "gset":
        return read_gset(path)
    from .io import load_problem  # lazy: optional module, avoids import cycles
    return load_problem(path)


def best_known(data_dir: PathLike | None = None) -> dict[str, float]:
    """``{instance name: best known objective}`` from ``best_known.csv``.

    Args:
        data_dir: the data directory holding ``best_known.csv`` (or the CSV path itself);
            defaults to ``$QUBO_ROUND_DATA``, else the shipped copy. Values are in each instance's own sense
            (``sense`` column; ``max`` everywhere in the shipped file).
    """
    root = _default_data_dir(data_dir)
    if root is None:
        raise FileNotFoundError(f"no data directory: pass data_dir or set ${DATA_ENV}")
    path = root if root.suffix == ".csv" else root / "best_known.csv"
    if not path.is_file():
        raise FileNotFoundError(f"best-known table not found: {path}")
    out: dict[str, float] = {}
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"instance", "best_known"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}, line 1: missing column(s) {sorted(missing)}")
        for row in reader:
            try:
                out[row["instance"]] = float(row["best_known"])
            except (TypeError, ValueError):
                raise ValueError(f"{path}, line {reader.line_num}: bad best_known value "
                                 f"{row.get('best_known')!r}") from None
    return out
