"""Relaxations and GPTQ against nearest rounding on every layer of the digits CNN.

For each layer problem (covariance form, eq. 20; conv3 has 4 groups) the script runs nearest,
GPTQ (natural and activation order), AdaRound (10k and 2k iterations), sigmoid annealing (10k and
2k), the straight-through estimator (2k), greedy descent from nearest (a reference), and the exact
solver where a row has at most 24 free variables, and writes energies (the reconstruction loss
``tr(dW H dW^T)``) and wall times as a markdown table::

    python benchmarks/relaxations_digits.py [--bits 3] [--samples 256] [--seed 0] \\
        [--out benchmarks/results/relaxations_digits.md]
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import time
from pathlib import Path

import torch

import qubo_round.relaxations.adaround  # noqa: F401  (registration)
import qubo_round.relaxations.sigmoid_anneal  # noqa: F401
import qubo_round.relaxations.ste  # noqa: F401
import qubo_round.solvers.gptq  # noqa: F401
import qubo_round.zoo
from qubo_round.extract import layer_problems
from qubo_round.grid import Grid
from qubo_round.solvers import get_solver

log = logging.getLogger("relaxations_digits")

LAYERS = ("conv1", "conv2", "conv3", "fc1", "fc2")
SOLVERS = ("nearest", "gptq", "gptq/act-order", "adaround", "adaround/fast", "sigmoid-anneal/long",
           "sigmoid-anneal", "ste", "greedy", "exact")


def run(bits: int, samples: int, seed: int, solvers=SOLVERS) -> list[dict]:
    """One record per (problem, solver): layer, group, shape, free, solver, energy, seconds."""
    bundle = qubo_round.zoo.load_model("digits")
    data = bundle.calibration(samples, seed)
    records = []
    for layer in LAYERS:
        for p in layer_problems(bundle.model, layer, data, Grid(bits=bits)):
            name = layer if p.meta["groups"] == 1 else f"{layer}[{p.meta['group']}]"
            for spec in solvers:
                if spec == "exact" and int(p.num_free.max()) > 24:
                    continue
                t0 = time.perf_counter()
                r = get_solver(spec).solve(p, seed=seed)
                sec = time.perf_counter() - t0
                records.append(dict(layer=layer, problem=name, shape=p.shape, free=int(p.num_free.sum()),
                                    solver=spec, energy=r.energy, seconds=sec))
                log.info("%-9s %-20s energy %.5g  %.2fs", name, spec, r.energy, sec)
    return records


def _aggregate(records: list[dict]) -> dict[tuple[str, str], tuple[float, float]]:
    """(problem, solver) -> (energy, seconds), plus (layer, solver) sums over a layer's groups
    where every group has that solver's result."""
    agg = {(r["problem"], r["solver"]): (r["energy"], r["seconds"]) for r in records}
    for layer in LAYERS:
        probs = {r["problem"] for r in records if r["layer"] == layer}
        if len(probs) < 2:
            continue
        for s in {r["solver"] for r in records}:
            if all((q, s) in agg for q in probs):
                agg[(layer, s)] = (sum(agg[(q, s)][0] for q in probs), sum(agg[(q, s)][1] for q in probs))
    return agg


def to_markdown(records: list[dict], bits: int, samples: int, seed: int) -> str:
    agg = _aggregate(records)
    solvers = [s for s in SOLVERS if any(r["solver"] == s for r in records)]
    rows = []
    for layer in LAYERS:
        probs = sorted({r["problem"] for r in records if r["layer"] == layer})
        rows += probs if len(probs) == 1 else probs + [layer]
    shapes = {r["problem"]: (r["shape"], r["free"]) for r in records}
    head = "| problem | rows x cols | free | " + " | ".join(solvers) + " |"
    sep = "|---|---|---|" + "---|" * len(solvers)
    lines = [f"# Relaxations and GPTQ on the digits CNN ({bits}-bit per-channel MSE grid)", "",
             f"Covariance form (eq. 20), {samples} calibration images (seed {seed}); energy = "
             "reconstruction loss `tr(dW H dW^T)` (lower is better); `exact` where every row has "
             "at most 24 free variables; conv3 rows without a group index sum its 4 groups.", "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores "
             f"(shared with other jobs while this ran), torch {torch.__version__}, "
             "solvers on CPU with one thread each. Solver defaults: adaround 10k iterations "
             "(lambda 1, lr 1e-2), adaround/fast 2k (lr 0.1), sigmoid-anneal 2k / long 10k "
             "(lr 0.1, T 1 -> 1e-3), ste 2k (lr 1e-2), greedy = steepest descent from nearest.", "",
             "## Energy", "", head, sep]
    for row in rows:
        shape, free = shapes.get(row, (None, None))
        if shape is None:
            shape = "4 x " + "x".join(str(x) for x in shapes[f"{row}[0]"][0])
            free = sum(v[1] for k, v in shapes.items() if k.startswith(row + "["))
        best = min(agg[(row, s)][0] for s in solvers if (row, s) in agg)
        cells = []
        for s in solvers:
            if (row, s) not in agg:
                cells.append("")
                continue
            e = agg[(row, s)][0]
            cells.append(f"**{e:.4g}**" if e <= best * (1 + 1e-9) else f"{e:.4g}")
        label = f"{shape[0]} x {shape[1]}" if isinstance(shape, tuple) else shape
        lines.append(f"| {row} | {label} | {free} | " + " | ".join(cells) + " |")
    lines += ["", "## Energy relative to nearest rounding", "", head.replace("| rows x cols | free ", ""),
              "|---|" + "---|" * len(solvers)]
    for row in rows:
        near = agg[(row, "nearest")][0]
        cells = [f"{agg[(row, s)][0] / near:.3f}" if (row, s) in agg else "" for s in solvers]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines += ["", "## Wall time (s)", "", head.replace("| rows x cols | free ", ""),
              "|---|" + "---|" * len(solvers)]
    for row in rows:
        cells = [f"{agg[(row, s)][1]:.2f}" if (row, s) in agg else "" for s in solvers]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bits", type=int, default=3)
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--solvers", nargs="+", default=list(SOLVERS))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "relaxations_digits.md")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    records = run(args.bits, args.samples, args.seed, tuple(args.solvers))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(to_markdown(records, args.bits, args.samples, args.seed))
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
