"""Two steps of every layer besides the solver, each against its plain formulation, on MiniLM.

* **Scale search** (``Grid(scale_method="mse")``, per channel, 100 candidate ranges): the library's
  blocked search (:func:`qubo_round.grid.choose_qparams`: blocks of rows through every candidate
  in reused buffers) against ``plain_search`` below, which rounds the whole matrix once per
  candidate (as the library did before). Every Linear weight of all-MiniLM-L6-v2 (36 layers).
* **Polish** (single-flip steepest descent to a 1-flip minimum, the pipeline's default after the
  solver): :func:`qubo_round.solvers.greedy.steepest_descent` (compact working copies of the
  active rows, deltas in place, contiguous column reads) against ``plain_descent`` below (the
  previous formulation: gathers of the active rows and a fresh delta matrix every step, columns
  read across ``A``), from nearest rounding, on the six Linear layers of the first encoder block
  with their real layer-wise ``H`` (``--sentences`` calibration sentences).

Both pairs must give identical results (checked: the script fails otherwise); times are the
fastest of ``--repeats`` rounds, order alternated, in one process on one thread::

    python benchmarks/construction_speed.py [--bits 4] [--repeats 3] [--sentences 64]

writes ``benchmarks/results/construction_speed.md`` and ``.json``. Needs the ``minilm`` extra.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from qubo_round.solvers.greedy import steepest_descent  # first: the solvers register themselves
from qubo_round.builders import asymmetric_problem  # noqa: E402
from qubo_round.grid import Grid, _minmax_qparams, choose_qparams, nearest_dequant  # noqa: E402
from qubo_round.problem import flip_energy_deltas  # noqa: E402
from qubo_round.stats import capture_stats  # noqa: E402
from qubo_round.zoo import load_model  # noqa: E402

log = logging.getLogger("construction_speed")
RESULTS = Path(__file__).parent / "results"


def plain_search(W: np.ndarray, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel MSE scale search, the whole matrix rounded once per candidate range."""
    lo, hi = W.min(1), W.max(1)
    s0, z0 = _minmax_qparams(lo, hi, grid)
    best_err, best_s, best_z = np.full(s0.shape, np.inf), s0.copy(), z0.copy()
    for a in np.linspace(1.0, 1.0 / grid.search_points, grid.search_points):
        s, z = _minmax_qparams(lo * a, hi * a, grid)
        dW = nearest_dequant(W, np.where(s > 0, s, 1.0)[:, None], z[:, None], grid) - W
        err = (dW**2).sum(axis=1)
        better = (err < best_err) & (s > 0)
        best_err, best_s, best_z = (np.where(better, err, best_err), np.where(better, s, best_s),
                                    np.where(better, z, best_z))
    return best_s, best_z


def plain_descent(problem, X: np.ndarray, tol: float = 1e-12) -> np.ndarray:
    """Steepest single-flip descent of every row of ``X`` (1, rows, n), as formulated before."""
    X = problem.apply_fixed(X).astype(np.float64)
    QX = problem.matvec(X)
    S, R, n = X.shape
    diag = np.broadcast_to(problem.diagonal, (R, n))
    fixed = np.broadcast_to(problem.fixed_mask, (R, n))
    s_a, r_a = (a.ravel() for a in np.meshgrid(np.arange(S), np.arange(R), indexing="ij"))
    for _ in range(10 * n + 10):
        m = np.arange(len(s_a))
        Xa, QXa = X[s_a, r_a], QX[s_a, r_a]
        D = flip_energy_deltas(Xa, QXa, diag[r_a], fixed[r_a])
        i = np.argmin(D, axis=-1)
        move = D[m, i] < -tol * (1.0 + np.abs(QXa[m, i]))
        if not move.any():
            break
        s_a, r_a, i = s_a[move], r_a[move], i[move]
        dm = 1.0 - 2.0 * X[s_a, r_a, i]
        X[s_a, r_a, i] += dm
        col = problem.scale[r_a, None] ** 2 * problem.A[:, i].T  # columns of A, read across rows
        QX[s_a, r_a] += dm[:, None] * (col + (np.arange(n) == i[:, None]) * problem.linear[r_a, i][:, None])
    return X.astype(np.uint8)


def best_of(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sentences", type=int, default=64)
    ap.add_argument("--layers", type=int, default=None, help="only the first N Linear layers (smoke runs)")
    ap.add_argument("--out", type=Path, default=RESULTS / "construction_speed")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(1)
    bundle = load_model("minilm")
    model = bundle.model
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)][:args.layers]
    grid = Grid(bits=args.bits)
    meta = dict(argv=" ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                              if k != "out" and v is not None),
                machine=platform.machine(), cpus=os.cpu_count(), torch=torch.__version__,
                python=platform.python_version(), load_start=os.getloadavg()[0])
    search, polish = [], []
    with threadpool_limits(limits=1):
        for name, mod in linears:
            W = mod.weight.detach().double().numpy()
            t_plain, ref = best_of(lambda: plain_search(W, grid), args.repeats)
            t_lib, got = best_of(lambda: choose_qparams(W, grid), args.repeats)
            if not (np.array_equal(ref[0], got[0]) and np.array_equal(ref[1], got[1])):
                raise SystemExit(f"{name}: the blocked scale search chose other scales than the plain one")
            search.append(dict(layer=name, shape=list(W.shape), plain_s=t_plain, library_s=t_lib))
            log.info("search %s %s: plain %.3fs, library %.3fs", name, W.shape, t_plain, t_lib)
        block = [(n, m) for n, m in linears if ".layer.0." in n]
        calib = bundle.calibration(args.sentences, 0)
        stats = capture_stats(model, [n for n, _ in block], calib)
        for name, mod in block:
            W = mod.weight.detach().double().numpy()
            H = stats[name].groups[0].H
            p = asymmetric_problem(W, H, H, H, grid, layer=name)
            X0 = p.space.nearest()[None]
            t_plain, ref = best_of(lambda: plain_descent(p, X0), args.repeats)
            t_lib, got = best_of(lambda: steepest_descent(p, X0)[0], args.repeats)
            if not np.array_equal(ref, got):
                raise SystemExit(f"{name}: the two descents ended at different roundings")
            flips = int((got != X0).sum())
            polish.append(dict(layer=name, shape=list(W.shape), flips=flips, plain_s=t_plain, library_s=t_lib))
            log.info("polish %s %s: %d flips, plain %.3fs, library %.3fs", name, W.shape, flips, t_plain, t_lib)
    meta["load_end"] = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(dict(meta=meta, search=search, polish=polish), indent=1))
    args.out.with_suffix(".md").write_text(to_markdown(meta, search, polish, args))
    log.info("wrote %s", args.out.with_suffix(".md"))


def to_markdown(meta, search, polish, args) -> str:
    tot = lambda rows, k: sum(r[k] for r in rows)  # noqa: E731
    lines = [f"# Scale search and polish against their plain formulations: all-MiniLM-L6-v2, {args.bits} bits", "",
             f"`python benchmarks/construction_speed.py {meta['argv']}`", "",
             f"Fastest of {args.repeats} rounds per step, one thread, {meta['machine']} ({meta['cpus']} cores; load "
             f"{meta['load_start']:.1f} at start, {meta['load_end']:.1f} at end), torch {meta['torch']}, Python "
             f"{meta['python']}. Both formulations give identical scales and identical roundings (checked).", "",
             "## Scale search (per-channel MSE, 100 candidates), every Linear layer", "",
             f"Total: plain {tot(search, 'plain_s'):.2f} s, library {tot(search, 'library_s'):.2f} s: "
             f"**{tot(search, 'plain_s') / tot(search, 'library_s'):.2f}x**.", "",
             "| shape | layers | plain s | library s | ratio |", "|---|---|---|---|---|"]
    for shape in sorted({tuple(r["shape"]) for r in search}):
        rows = [r for r in search if tuple(r["shape"]) == shape]
        lines.append(f"| {shape[0]}x{shape[1]} | {len(rows)} | {tot(rows, 'plain_s'):.2f} | {tot(rows, 'library_s'):.2f} | "
                     f"{tot(rows, 'plain_s') / tot(rows, 'library_s'):.2f}x |")
    lines += ["", f"## Polish from nearest rounding, encoder block 0 (layer-wise H from {args.sentences} sentences)", "",
              f"Total: plain {tot(polish, 'plain_s'):.2f} s, library {tot(polish, 'library_s'):.2f} s: "
              f"**{tot(polish, 'plain_s') / tot(polish, 'library_s'):.2f}x**.", "",
              "| layer | shape | flips | plain s | library s | ratio |", "|---|---|---|---|---|---|"]
    for r in polish:
        lines.append(f"| {r['layer'].split('encoder.')[-1]} | {r['shape'][0]}x{r['shape'][1]} | {r['flips']} | "
                     f"{r['plain_s']:.3f} | {r['library_s']:.3f} | {r['plain_s'] / r['library_s']:.2f}x |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
