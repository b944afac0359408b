"""What the relaxation's step machinery buys: subnormal flush and active-set compaction, A/B.

Every layer of the digits CNN (layer-wise covariance problems, 3 bits, 1024 calibration images,
seed 0) is solved by ``adaround`` (10k iterations, one thread) under four settings, interleaved
over ``--repeats`` rounds in one process (times: the fastest round):

* ``plain``: no flush, no compaction (the loop as it was before both);
* ``flush``: subnormals flushed, no compaction;
* ``default``: flush, compaction by the rule of ``relaxations.active`` (``MIN_ENTRIES``);
* ``always``: flush, compaction on every layer, however small.

Every setting must give the same rounding (checked; the script fails otherwise)::

    python benchmarks/relaxation_step.py [--iterations 10000] [--repeats 3]

writes ``benchmarks/results/relaxation_step.md`` and ``.json``.
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

import qubo_round.relaxations.active as active
from qubo_round.extract import layer_problems
from qubo_round.grid import Grid
from qubo_round.solvers import get_solver
from qubo_round.zoo import load_model

log = logging.getLogger("relaxation_step")
RESULTS = Path(__file__).parent / "results"
#: name -> the adaround parameters (flush_subnormals, compact_min_entries) of that setting
SETTINGS = {"plain": (False, 10**12), "flush": (True, 10**12), "default": (True, active.MIN_ENTRIES),
            "always": (True, 0)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=10000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS / "relaxation_step.md")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    bundle = load_model("digits")
    calib = bundle.calibration(1024, 0)
    layers = [name for name, m in bundle.model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    problems = {}
    for name in layers:  # a grouped conv: its first group
        ps = layer_problems(bundle.model, name, calib, Grid(bits=3))
        problems[name if len(ps) == 1 else f"{name} (group 0 of {len(ps)})"] = ps[0]
    layers = list(problems)
    solvers = {s: get_solver("adaround", iterations=args.iterations, flush_subnormals=flush, compact_min_entries=m)
               for s, (flush, m) in SETTINGS.items()}
    load0 = os.getloadavg()[0]
    seconds = {(L, s): [] for L in layers for s in SETTINGS}
    roundings = {}
    for k in range(args.repeats):
        for L, p in problems.items():
            for s in (SETTINGS if k % 2 == 0 else list(SETTINGS)[::-1]):
                t0 = time.perf_counter()
                r = solvers[s].solve(p, seed=0)
                seconds[(L, s)].append(time.perf_counter() - t0)
                ref = roundings.setdefault(L, r.best)
                if not np.array_equal(ref, r.best):
                    raise SystemExit(f"{L}: setting {s!r} changed the rounding")
        log.info("round %d done", k)
    rows = [dict(layer=L, shape="x".join(map(str, problems[L].shape)),
                 **{s: min(seconds[(L, s)]) for s in SETTINGS}) for L in layers]
    total = {s: sum(r[s] for r in rows) for s in SETTINGS}
    meta = dict(iterations=args.iterations, repeats=args.repeats, machine=platform.machine(), cpus=os.cpu_count(),
                torch=torch.__version__, load_start=load0, load_end=os.getloadavg()[0])
    lines = ["# Relaxation step: subnormal flush and active-set compaction (digits CNN, 3 bits)", "",
             f"`python benchmarks/relaxation_step.py --iterations {args.iterations} --repeats {args.repeats}`", "",
             f"`adaround`, {args.iterations} iterations per layer, one thread, layer-wise covariance problems "
             f"(1024 calibration images, seed 0); fastest of {args.repeats} interleaved rounds. Machine: "
             f"{meta['machine']}, {meta['cpus']} CPU cores (load average {load0:.1f} at start, "
             f"{meta['load_end']:.1f} at end), torch {meta['torch']}. Every setting gave the same rounding on every "
             "layer (checked by the script).", "",
             "| layer | shape | plain s | flush s | default s | always s | plain / default |",
             "|---|---|---|---|---|---|---|"]
    for r in rows + [dict(layer="total", shape="", **total)]:
        lines.append(f"| {r['layer']} | {r['shape']} | {r['plain']:.2f} | {r['flush']:.2f} | {r['default']:.2f} | "
                     f"{r['always']:.2f} | {r['plain'] / r['default']:.2f}x |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(dict(meta=meta, rows=rows, total=total), indent=1))
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
