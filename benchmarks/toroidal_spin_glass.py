"""Sparse +-1 max-cut (2D toroidal spin glasses, the Gset G62 kind, and random planar graphs):
our solvers against neal.

``qubo_round.instances.toroidal_grid(rows, cols, weights="pm1", seed=s)`` and
``planar_graph(n, weights="pm1", seed=s)``: no optimum is known, so each solver's cut is compared
with the best any of them found. ``its`` gets ``--seconds`` of time limit; the dwave tabu gets
the same as its timeout; neal runs 20000 sweeps x 8 reads; our annealer's sparse backend runs
``anneal/sparse`` (the same 20000 x 8) and ``anneal/sparse-long`` (20000 x 32, about
``--seconds``); their times are shown. Our dense annealer (``anneal``, 117-149 s for 20000 x 8
on these tori) is left out.

    python benchmarks/toroidal_spin_glass.py [--rows 40] [--cols 50] [--planar 2000] [--seeds 0 1]
        [--seconds 10] [--out benchmarks/results/toroidal_spin_glass.md]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    from qubo_round.instances import planar_graph, toroidal_grid
    from qubo_round.solvers import get_solver

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=40)
    ap.add_argument("--cols", type=int, default=50)
    ap.add_argument("--planar", type=int, default=2000, help="vertices of the planar graphs (0: none)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "toroidal_spin_glass.md")
    a = ap.parse_args(argv)
    if not a.seconds > 0:
        raise SystemExit("--seconds must be > 0")
    runs = {"its": ({}, a.seconds), "tabu": ({"timeout_ms": int(1000 * a.seconds)}, None),
            "neal": ({"num_sweeps": 20000, "num_reads": 8}, None),
            "anneal/sparse": ({}, None), "anneal/sparse-long": ({}, None)}
    instances = [(f"torus {a.rows}x{a.cols}, seed {s}", lambda s=s: toroidal_grid(a.rows, a.cols, weights="pm1", seed=s))
                 for s in a.seeds]
    if a.planar:
        instances += [(f"planar {a.planar}, seed {s}", lambda s=s: planar_graph(a.planar, weights="pm1", seed=s))
                      for s in a.seeds]
    lines = ["# Sparse +-1 max-cut: toroidal spin glasses and planar graphs", "",
             f"`python benchmarks/toroidal_spin_glass.py {' '.join(argv if argv is not None else sys.argv[1:])}` "
             f"on {os.cpu_count()} CPU cores ({platform.machine()}), solver seed 0.", "",
             "Cut (gap to the best found, seconds); +-1 weights.", "",
             "| instance | " + " | ".join(runs) + " |", "|---|" + "---:|" * len(runs)]
    for label, make in instances:
        p = make()
        got = {}
        for spec, (kw, limit) in runs.items():
            t0 = time.perf_counter()
            r = get_solver(spec, **kw).solve(p, seed=0, time_limit=limit)
            got[spec] = (p.objective(r.energy), time.perf_counter() - t0)
            print(f"  {label} {spec}: cut {got[spec][0]:.0f} in {got[spec][1]:.1f} s", file=sys.stderr, flush=True)
        best = max(v[0] for v in got.values())
        lines.append(f"| {label} | " + " | ".join(f"{c:.0f} ({100 * (best - c) / abs(best):.2f}%, {s:.1f} s)"
                                                for c, s in got.values()) + " |")
    md = "\n".join(lines)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
