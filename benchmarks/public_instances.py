"""Solvers on public QUBO / Max-Cut instances against their best-known values.

Sets: OR-Library Beasley bqp50, bqp100, bqp250 (10 instances each), the gka set (45) and Gset
G1-G5 (max-cut, n = 800), read with :func:`qubo_round.instances.load_instance`. For every solver and instance:
objective (the instance's own, maximised), best known, gap in percent, hit (objective equal to
the best known), seconds. Writes a CSV and prints Markdown: the per-instance table and a
summary per set.

    python benchmarks/public_instances.py [--data-dir ../shared/data/qubo]
        [--solvers neal/thorough anneal/thorough tabu/long] [--sets bqp50 bqp100 bqp250 gset gka]
        [--seed 0] [--time-limit S] [--to-target] [--out benchmarks/results/public_instances.csv]

``--solvers its --time-limit 10 --to-target`` is our iterated tabu search's time to target:
each run stops at the best-known value or after 10 s.

Goal: every solver reaches the best known on all of bqp50 and bqp100; the best solver is within
0.1% on every bqp250 and G1-G5 instance.
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOLVERS = ["neal/thorough", "anneal/thorough", "tabu/long"]
SETS = {
    "bqp50": [f"orlib/bqp50.txt#{k}" for k in range(1, 11)],
    "bqp100": [f"orlib/bqp100.txt#{k}" for k in range(1, 11)],
    "bqp250": [f"orlib/bqp250.txt#{k}" for k in range(1, 11)],
    "gset": [f"gset/G{k}.txt" for k in range(1, 6)],
    "gka": [f"orlib/gka_qbsolv/bqpgka_{k}.qubo" for k in range(1, 46)],
}
FIELDS = ["set", "instance", "n", "solver", "objective", "best_known", "gap_pct", "hit", "seconds", "status"]


def run(data_dir: Path, solvers: list[str], sets: list[str], seed: int, time_limit: float | None = None,
        to_target: bool = False) -> list[dict]:
    from qubo_round.instances import best_known, load_instance
    from qubo_round.solvers.registry import get_solver
    import qubo_round.solvers.anneal  # noqa: F401  (registration)
    import qubo_round.solvers.neal  # noqa: F401
    import qubo_round.solvers.tabu  # noqa: F401

    known = best_known(data_dir)
    rows = []
    for set_name in sets:
        for spec in SETS[set_name]:
            problem = load_instance(data_dir / spec)
            name = problem.meta["name"]
            for solver_name in solvers:
                bk = known[name]
                # time to target: solvers with a target parameter stop at the best-known energy
                kw = {"target": problem.objective(bk)} if to_target and _takes_target(solver_name) else {}
                solver = get_solver(solver_name, **kw)
                t0 = time.perf_counter()
                r = solver.solve(problem, seed=seed, time_limit=time_limit)
                seconds = time.perf_counter() - t0
                obj = problem.objective(r.energy)
                sign = 1.0 if problem.meta.get("sense") == "max" else -1.0
                gap = 100.0 * sign * (bk - obj) / abs(bk)
                row = {"set": set_name, "instance": name, "n": problem.n, "solver": solver_name,
                       "objective": round(obj, 6), "best_known": bk, "gap_pct": round(gap, 4),
                       "hit": bool(gap <= 1e-9), "seconds": round(seconds, 3), "status": r.status}
                rows.append(row)
                print(f"  {name:10s} {solver_name:18s} obj {obj:12.1f} best {bk:10.1f} gap {gap:7.3f}% "
                      f"{seconds:6.2f} s", file=sys.stderr, flush=True)
    return rows


def _takes_target(spec: str) -> bool:
    import dataclasses

    from qubo_round.solvers import solver_class
    return ">" not in spec and "target" in {f.name for f in dataclasses.fields(solver_class(spec).Params)}


def markdown(rows: list[dict], solvers: list[str]) -> str:
    out = ["| instance | n | best known | " + " | ".join(f"{s} gap % (s)" for s in solvers) + " |",
           "|---|---:|---:|" + "---:|" * len(solvers)]
    by = {(r["instance"], r["solver"]): r for r in rows}
    for inst in dict.fromkeys(r["instance"] for r in rows):
        first = by[(inst, solvers[0])]
        cells = [f"{by[(inst, s)]['gap_pct']:.3f} ({by[(inst, s)]['seconds']:.1f})" for s in solvers]
        out.append(f"| {inst} | {first['n']} | {first['best_known']:g} | " + " | ".join(cells) + " |")
    out += ["", "| set | instances | " + " | ".join(f"{s} hits" for s in solvers)
            + " | best-of gap worst % | " + " | ".join(f"{s} mean s" for s in solvers) + " |",
            "|---|---:|" + "---:|" * (2 * len(solvers) + 1)]
    for set_name in dict.fromkeys(r["set"] for r in rows):
        rs = [r for r in rows if r["set"] == set_name]
        insts = list(dict.fromkeys(r["instance"] for r in rs))
        hits = [sum(by[(i, s)]["hit"] for i in insts) for s in solvers]
        best_gap = max(min(by[(i, s)]["gap_pct"] for s in solvers) for i in insts)
        secs = [np.mean([by[(i, s)]["seconds"] for i in insts]) for s in solvers]
        out.append(f"| {set_name} | {len(insts)} | " + " | ".join(f"{h}/{len(insts)}" for h in hits)
                   + f" | {best_gap:.3f} | " + " | ".join(f"{t:.2f}" for t in secs) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "qubo",
                    help="public instance folder (default: ../shared/data/qubo beside the repository)")
    ap.add_argument("--solvers", nargs="+", default=DEFAULT_SOLVERS)
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-limit", type=float, default=None, help="seconds per solve (default: none)")
    ap.add_argument("--to-target", action="store_true",
                    help="solvers with a 'target' parameter stop on reaching the best-known value")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "public_instances.csv")
    args = ap.parse_args(argv)
    if args.time_limit is not None and not args.time_limit > 0:
        raise SystemExit("--time-limit must be > 0 seconds")
    rows = run(args.data_dir, args.solvers, args.sets, args.seed, args.time_limit, args.to_target)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    print(markdown(rows, args.solvers))
    print(f"\nwritten {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
