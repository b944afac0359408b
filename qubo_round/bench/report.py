"""Reports of a results CSV: Markdown tables and PNG plots.

The *gap* used for ranking is, per row, the first available of ``gap_to_optimum``,
``gap_to_best_known`` and ``gap_to_bound`` (see :mod:`.trial` for the formulas). A *hit* is a
trial within :data:`HIT_TOL` (relative) of the optimum or the best-known value. Failed trials
count in ``errors`` only. When a trial appears several times (``retry_errors``), its last row
counts.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..extras import MissingExtraError, require
from .store import read_rows, row_key

log = logging.getLogger(__name__)

#: Relative gap within which a trial counts as reaching the optimum / best-known value.
HIT_TOL = 1e-7
_FLOATS = ("energy", "objective", "optimum", "bound", "gap_to_optimum", "gap_to_best_known",
           "gap_to_bound", "wall_seconds", "best_known")


def _float(v: str) -> float:
    try:
        return float(v) if v != "" else math.nan
    except ValueError:
        return math.nan


def load_results(path: str | Path) -> list[dict[str, Any]]:
    """Rows of ``results.csv`` (or of ``DIR/results.csv``), last row per trial key, with numeric
    columns as floats (NaN when empty) and ``gap`` added."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no results file {path}")
    last: dict[tuple, dict] = {}
    for r in read_rows(path):
        last[row_key(r)] = r
    rows = []
    for r in last.values():
        r = dict(r)
        for c in _FLOATS:
            r[c] = _float(r[c])
        r["gap"] = next((r[c] for c in ("gap_to_optimum", "gap_to_best_known", "gap_to_bound")
                         if math.isfinite(r[c])), math.nan)
        rows.append(r)
    return rows


def _stats(rows: list[dict]) -> dict[str, Any]:
    ok = [r for r in rows if not r["error"]]
    gaps = np.array([r["gap"] for r in ok if math.isfinite(r["gap"])])
    times = np.array([r["wall_seconds"] for r in ok if math.isfinite(r["wall_seconds"])])
    return {"trials": len(rows), "errors": len(rows) - len(ok),
            "mean_gap": float(gaps.mean()) if gaps.size else math.nan,
            "median_gap": float(np.median(gaps)) if gaps.size else math.nan,
            "optimal": sum(r["gap_to_optimum"] <= HIT_TOL for r in ok),
            "with_optimum": sum(math.isfinite(r["gap_to_optimum"]) for r in ok),
            "best_known": sum(r["gap_to_best_known"] <= HIT_TOL for r in ok),
            "with_best_known": sum(math.isfinite(r["gap_to_best_known"]) for r in ok),
            "mean_seconds": float(times.mean()) if times.size else math.nan}


def league(rows: list[dict]) -> list[dict[str, Any]]:
    """Per solver spec: :func:`_stats`, sorted by mean gap (solvers without gaps last)."""
    solvers = dict.fromkeys(r["solver"] for r in rows)
    table = [{"solver": s, **_stats([r for r in rows if r["solver"] == s])} for s in solvers]
    return sorted(table, key=lambda t: (math.isnan(t["mean_gap"]), t["mean_gap"], t["solver"]))


def _fmt(v: Any, digits: int = 3) -> str:
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.{digits}g}"
    return str(v)


def league_markdown(table: list[dict]) -> str:
    """A league table as Markdown."""
    lines = ["| solver | trials | errors | mean gap | median gap | optimal hits | best-known hits | mean time (s) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for t in table:
        opt = f"{t['optimal']}/{t['with_optimum']}" if t["with_optimum"] else "-"
        bk = f"{t['best_known']}/{t['with_best_known']}" if t["with_best_known"] else "-"
        lines.append(f"| {t['solver']} | {t['trials']} | {t['errors']} | {_fmt(t['mean_gap'])} | "
                     f"{_fmt(t['median_gap'])} | {opt} | {bk} | {_fmt(t['mean_seconds'])} |")
    return "\n".join(lines)


def _errors_section(rows: list[dict]) -> list[str]:
    failed: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        if r["error"]:
            failed.setdefault((r["solver"], r["error"][:160]), []).append(f"{r['suite']}/{r['instance']}")
    if not failed:
        return []
    out = ["## Failed trials", "", "| solver | error | trials |", "|---|---|---:|"]
    for (solver, err), where in failed.items():
        out.append(f"| {solver} | {err.replace('|', '/')} | {len(where)} |")
    return out + [""]


def _gap_limits(ax, values) -> None:
    """Symlog gap axis from 0 (or the most negative gap) to a bit above the largest gap."""
    vals = [v for v in values if math.isfinite(v)] or [0.0]
    lo, hi = min(vals), max(vals)
    ax.set_ylim(2 * lo if lo < 0 else 0.0, 2 * hi if hi > 0 else 1e-3)


def _plot_gap_time(rows: list[dict], path: Path, solvers: list[str]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    gaps = []
    for s in solvers:
        pts = [(r["wall_seconds"], r["gap"]) for r in rows
               if r["solver"] == s and not r["error"] and math.isfinite(r["gap"]) and r["wall_seconds"] > 0]
        if pts:
            t, g = zip(*pts)
            gaps += g
            ax.scatter(t, g, label=s, alpha=0.7, s=18)
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=1e-4)
    _gap_limits(ax, gaps)
    ax.set_xlabel("wall time per trial (s, log)")
    ax.set_ylabel("relative gap (symlog)")
    ax.set_title("gap versus time")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Title": "gap versus time", "Description": "solvers: " + ", ".join(solvers)})
    plt.close(fig)


def _plot_league(table: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [t["solver"] for t in table]
    means = [0.0 if math.isnan(t["mean_gap"]) else t["mean_gap"] for t in table]
    medians = [0.0 if math.isnan(t["median_gap"]) else t["median_gap"] for t in table]
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(names) + 2), 4))
    x = np.arange(len(names))
    ax.bar(x - 0.2, means, 0.4, label="mean gap")
    ax.bar(x + 0.2, medians, 0.4, label="median gap")
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_yscale("symlog", linthresh=1e-4)
    _gap_limits(ax, means + medians)
    ax.set_ylabel("relative gap (symlog)")
    ax.set_title("solver league")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Title": "solver league", "Description": "solvers: " + ", ".join(names)})
    plt.close(fig)


def write_report(results: str | Path, out: str | Path | None = None) -> Path:
    """Write ``report.md``, ``gap_vs_time.png`` and ``league.png`` to ``out`` (default
    ``<run dir>/report``); returns the Markdown path."""
    results = Path(results)
    run_dir = results if results.is_dir() else results.parent
    out = Path(out) if out is not None else run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    rows = load_results(results)
    if not rows:
        raise ValueError(f"{results} holds no results yet")
    table = league(rows)
    solvers = [t["solver"] for t in table]
    md = [f"# Benchmark report: {run_dir.name}", "",
          f"{len(rows)} trials, {len({(r['suite'], r['instance']) for r in rows})} instances, "
          f"{len(solvers)} solvers. Gap: relative excess energy over the optimum, else the best-known "
          f"value, else the lower bound; hits within {HIT_TOL:g}.", "",
          "## League", "", league_markdown(table), ""]
    for suite in dict.fromkeys(r["suite"] for r in rows):
        md += [f"## Suite {suite}", "", league_markdown(league([r for r in rows if r["suite"] == suite])), ""]
    md += _errors_section(rows)
    try:
        require("matplotlib", "plots", "the report's plots")
    except MissingExtraError as e:  # the tables stand alone; say so in the report and the log
        log.warning("%s; writing the tables only", e)
        md += ["## Plots", "", f"Not drawn: {e}.", ""]
    else:
        _plot_gap_time(rows, out / "gap_vs_time.png", solvers)
        _plot_league(table, out / "league.png")
        md += ["## Plots", "", "![gap versus time](gap_vs_time.png)", "", "![league](league.png)", ""]
    path = out / "report.md"
    path.write_text("\n".join(md))
    log.info("report written to %s", path)
    return path
