"""What every study shares: where results go, how they are written, cached and described.

A study's ``run(ctx)`` computes its cells through :meth:`StudyContext.cell` (each cell's
JSON-able result is cached under ``runs/study-cache/``, so an interrupted study resumes where it
stopped and a finished one regenerates its report without recomputing), then adds Markdown
(``ctx.text``, ``ctx.table``), CSV rows (``ctx.csv``) and figures (``ctx.figure``).
:func:`run_study` writes ``NAME.md`` with a header stating the command, seed, mode and machine.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from qubo_round.bench.machine import machine_line
from qubo_round.extras import require
from qubo_round.threads import limit_threads

log = logging.getLogger(__name__)


def results_root(here: Path) -> Path:
    """Where full runs write: ``studies/results`` of a source checkout (``here`` is the studies
    folder and a ``pyproject.toml`` sits beside it: the committed results), else
    ``studies-results`` under the current directory, never into an installed package."""
    here = Path(here).resolve()
    if (here.parent / "pyproject.toml").is_file() and not {"site-packages", "dist-packages"} & set(here.parts):
        return here / "results"
    return Path("studies-results")


REPO_RESULTS = results_root(Path(__file__).parent)


def default_out(name: str, quick: bool) -> Path:
    """Full runs: ``studies/results/NAME`` in a checkout (committed; ``studies-results/NAME``
    under the current directory from an installed package); quick runs: ``runs/studies-quick/NAME``."""
    return Path("runs/studies-quick") / name if quick else REPO_RESULTS / name


def _json_default(o: Any):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def fmt(v: Any, digits: int = 4) -> str:
    """A table cell: floats to ``digits`` significant digits, None/NaN as ``-``."""
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.{digits - 1}e}"
        return f"{v:.{digits}g}"
    return str(v)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    vals = [float(v) for v in values]
    if not vals:
        return math.nan, math.nan
    m = sum(vals) / len(vals)
    if len(vals) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))


def pm(values: Sequence[float], scale: float = 1.0, digits: int = 2) -> str:
    """``mean ± std`` of ``values * scale`` (e.g. accuracies as percent with ``scale=100``)."""
    m, s = mean_std([v * scale for v in values])
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def markdown_table(rows: list[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return "(no rows)"
    cols = list(columns) if columns else list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


@dataclass
class StudyContext:
    """Settings of one study run and the report it is building.

    Attributes:
        name: the study's registry name.
        quick: the CI-sized variant (fewer seeds, layers, iterations); results are not the study's.
        seed: base seed; cells derive their seeds from it (``seed + i``), stated in the report.
        out: results folder (``NAME.md``, ``*.csv``, ``*.png``).
        cache: cell cache folder (``None``: no caching).
        progress: show tqdm bars.
        lab: what the run loads once (:class:`Lab`: bundles, memoised problems).
    """

    name: str
    quick: bool = False
    seed: int = 0
    out: Path = Path(".")
    cache: Path | None = None
    progress: bool = True
    command: str = ""
    _sections: list[str] = field(default_factory=list)
    _files: list[str] = field(default_factory=list)
    computed: int = 0
    reused: int = 0
    lab: "Lab" = field(default_factory=lambda: Lab())

    # --- choosing sizes -------------------------------------------------------------------
    def pick(self, full, quick):
        """``quick`` in quick mode, else ``full``."""
        return quick if self.quick else full

    # --- computing ------------------------------------------------------------------------
    def cell(self, key: str | dict, fn: Callable[[], Any]) -> Any:
        """Result of ``fn()`` (JSON-able), cached under ``key`` so a rerun or a resumed run does
        not recompute it. ``key`` must name everything the result depends on."""
        if self.cache is None:
            self.computed += 1
            return fn()
        text = json.dumps(key, sort_keys=True, default=_json_default)
        key = json.loads(text)  # as stored: tuples become lists
        path = self.cache / (hashlib.sha256(text.encode()).hexdigest()[:20] + ".json")
        if path.exists():
            stored = json.loads(path.read_text())
            if stored.get("key") == key:
                self.reused += 1
                return stored["value"]
        value = fn()
        self.computed += 1
        self.cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, "value": value}, default=_json_default))
        os.replace(tmp, path)  # atomic: a killed run never leaves a half-written cell
        return value

    def bar(self, iterable: Iterable, desc: str, total: int | None = None):
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=f"{self.name}: {desc}", total=total, disable=not self.progress, leave=False)

    # --- reporting ------------------------------------------------------------------------
    def text(self, markdown: str) -> None:
        self._sections.append(markdown.strip())

    def table(self, rows: list[dict[str, Any]], columns: Sequence[str] | None = None,
              title: str | None = None) -> None:
        block = (f"### {title}\n\n" if title else "") + markdown_table(rows, columns)
        self._sections.append(block)

    def csv(self, stem: str, rows: list[dict[str, Any]]) -> Path:
        """Write ``rows`` to ``OUT/STEM.csv`` (columns: union of the rows' keys, in order)."""
        import csv

        path = self.out / f"{stem}.csv"
        cols = list(dict.fromkeys(k for r in rows for k in r))
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            for r in rows:
                w.writerow({k: json.dumps(v, default=_json_default) if isinstance(v, (list, dict)) else v
                            for k, v in r.items()})
        self._files.append(path.name)
        return path

    @contextlib.contextmanager
    def figure(self, stem: str, caption: str = "", **subplots_kw):
        """``with ctx.figure("pareto", "caption") as (fig, ax):`` saves ``OUT/STEM.png`` and links it."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(**subplots_kw)
        try:
            yield fig, ax
            fig.tight_layout()
            path = self.out / f"{stem}.png"
            fig.savefig(path, dpi=110)
            self._files.append(path.name)
            self._sections.append(f"![{caption or stem}]({path.name})" + (f"\n\n*{caption}*" if caption else ""))
        finally:
            plt.close(fig)

    def markdown(self, question: str, seconds: float) -> str:
        mode = "quick (CI smoke test: smaller sizes, not the study's result)" if self.quick else "full"
        head = [f"# Study `{self.name}`", "", f"**Question.** {question}", "",
                f"- command: `{self.command}`",
                f"- mode: {mode}; base seed {self.seed}",
                f"- machine: {machine_line()}",
                f"- wall time: {seconds:.0f} s ({self.computed} cells computed, {self.reused} reused from the cache)",
                ""]
        return "\n".join(head) + "\n" + "\n\n".join(self._sections) + "\n"


def run_study(name: str, *, quick: bool = False, seed: int = 0, out: str | Path | None = None,
              cache: str | Path | None = "default", fresh: bool = False, progress: bool = True) -> Path:
    """Run study ``name``; return the path of its Markdown report.

    Args:
        quick: the CI-sized variant.
        seed: base seed.
        out: results folder (default: :func:`default_out`).
        cache: cell cache folder; ``"default"`` is ``runs/study-cache/NAME/{quick,full}``, None
            disables caching.
        fresh: delete the cache first (recompute everything).
    """
    from . import STUDIES, get_study

    run = get_study(name)
    require("matplotlib", "plots", f"study {name!r} (its figures)")  # before the work, not after it
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    out = Path(out) if out is not None else default_out(name, quick)
    out.mkdir(parents=True, exist_ok=True)
    if cache == "default":
        cache = Path("runs/study-cache") / name / ("quick" if quick else "full")
    cache = Path(cache) if cache is not None else None
    if fresh and cache is not None and cache.exists():
        shutil.rmtree(cache)
    command = f"qubo-round study {name}" + (" --quick" if quick else "") + (f" --seed {seed}" if seed else "")
    ctx = StudyContext(name=name, quick=quick, seed=seed, out=out, cache=cache, progress=progress, command=command)
    t0 = time.perf_counter()
    run(ctx)
    path = out / f"{name}.md"
    path.write_text(ctx.markdown(STUDIES[name][1], time.perf_counter() - t0))
    log.info("study %s: wrote %s (%d cells computed, %d reused)", name, path, ctx.computed, ctx.reused)
    return path


def threads(n: int, blas: bool = True):
    """torch (and, with ``blas``, numpy's BLAS) on at most ``n`` threads while a study computes;
    restored afterwards (:func:`qubo_round.threads.limit_threads`). One thread: the studies'
    operations are small, the 2 cores are shared, and reruns are bit-identical."""
    import torch  # noqa: F401  (imported, so that its threads are limited too)
    return limit_threads(n, blas=blas)


def one_thread():
    """:func:`threads` with one thread for torch and BLAS."""
    return threads(1)


# --- what a study run loads once -----------------------------------------------------------

class Lab:
    """What one study run loads once and shares between its cells: model bundles and memoised
    intermediate results (layer problems, rounding spaces). Each :class:`StudyContext` owns one
    (``ctx.lab``), so nothing outlives the run and two runs in one process share nothing."""

    def __init__(self) -> None:
        self._memo: dict[Any, Any] = {}

    def memo(self, key, fn: Callable[[], Any]) -> Any:
        """``fn()``, computed once per ``key`` (hashable, naming everything the value depends on)."""
        if key not in self._memo:
            self._memo[key] = fn()
        return self._memo[key]

    def bundle(self, name: str = "digits"):
        """The model-zoo bundle ``name`` (loaded once per run)."""
        from qubo_round.zoo import load_model

        return self.memo(("bundle", name), lambda: load_model(name))

    def accuracy(self, model, name: str = "digits") -> float:
        """Top-1 accuracy in [0, 1] of ``model`` on the bundle's held-out split."""
        return float(self.bundle(name).evaluate(model)["accuracy"])

    def quantize(self, calib, config, name: str = "digits"):
        """``quantize_model`` on the bundle's float model, without progress bars or a run directory."""
        from qubo_round.pipeline import quantize_model

        return quantize_model(self.bundle(name).model, calib, config, progress=False)
