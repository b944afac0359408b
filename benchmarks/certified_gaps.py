"""Certified gaps per row: how far the best rounding we find is, at most, from the optimum.

Reads a ``qubo-round bench`` run directory (its cached layer problems under ``problems/`` and the
per-row lower bounds of ``bounds.json``, computed there by :func:`qubo_round.bounds.lower_bound`:
exact enumeration, the branch and bound's proofs, else the best of its open-node bound, the SDP
bound and the eigenvalue bound), solves every problem of the chosen bit widths with ``--solvers``
and reports, for every row, ``gap = (E_best - LB) / LB`` with ``E_best`` the lowest energy any of
those solvers found; a proven row has gap 0 (up to the proof's rounding allowance). Prints the
per-layer medians and the median over all rows as Markdown; writes ``OUT.csv`` and ``OUT.md``.

    qubo-round bench --suite digits-layers --solver its --bits 2 --seeds 0 --out runs/league
    python benchmarks/certified_gaps.py --run-dir runs/league [--bits 2] [--solvers adaround/fast>its bnb/5s]
        [--out benchmarks/results/certified_gaps]
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NAME = re.compile(r"^(?P<layer>[a-z0-9]+?)(?:-g(?P<group>\d+))?-b(?P<bits>\d+)\.npz$")


def rows_of(run_dir: Path, bits: list[int], solvers: list[str], seed: int) -> list[dict]:
    from qubo_round.bounds import relative_gap
    from qubo_round.io import load_problem
    from qubo_round.solvers import get_solver

    bounds = json.loads((run_dir / "bounds.json").read_text())
    out = []
    for spec, ref in sorted(bounds.items()):
        m = NAME.match(Path(spec).name)
        if m is None or int(m["bits"]) not in bits or ref.get("rows") is None:
            continue
        problem = load_problem(spec)
        lb = np.asarray(ref["rows"], dtype=np.float64)
        energies = {s: get_solver(s).solve(problem, seed=seed).best_energies for s in solvers}
        best = np.min(np.stack(list(energies.values())), axis=0)
        winner = [min(solvers, key=lambda s: energies[s][k]) for k in range(problem.rows)]
        for k in range(problem.rows):
            gap = max(0.0, float(relative_gap(best[k], lb[k])))
            out.append({"layer": m["layer"], "group": int(m["group"] or 0), "bits": int(m["bits"]), "row": k,
                        "free": int(problem.num_free[k]), "best": float(best[k]), "winner": winner[k],
                        "bound": float(lb[k]), "bound_kind": ref["kind"], "gap": gap})
        print(f"  {Path(spec).name}: median gap {np.median([r['gap'] for r in out[-problem.rows:]]):.3g}",
              file=sys.stderr, flush=True)
    return out


def markdown(rows: list[dict]) -> str:
    lines = ["| layer | bits | rows | median free | proven (gap < 1e-6) | median gap | max gap |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    keys = list(dict.fromkeys((r["layer"], r["bits"]) for r in rows))
    for layer, bits in keys:
        rs = [r for r in rows if r["layer"] == layer and r["bits"] == bits]
        g = np.array([r["gap"] for r in rs])
        lines.append(f"| {layer} | {bits} | {len(rs)} | {np.median([r['free'] for r in rs]):.0f} | "
                     f"{int((g < 1e-6).sum())} | {np.median(g):.3g} | {g.max():.3g} |")
    for bits in sorted({r["bits"] for r in rows}):
        g = np.array([r["gap"] for r in rows if r["bits"] == bits])
        lines.append(f"| **all** | {bits} | {len(g)} | - | {int((g < 1e-6).sum())} | **{np.median(g):.3g}** | "
                     f"{g.max():.3g} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", type=Path, required=True, help="a qubo-round bench run directory")
    ap.add_argument("--bits", type=int, nargs="+", default=[2])
    ap.add_argument("--solvers", nargs="+", default=["adaround/fast>its", "gptq>its", "bnb/5s"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "certified_gaps")
    a = ap.parse_args(argv)
    if not (a.run_dir / "bounds.json").is_file():
        raise SystemExit(f"--run-dir {a.run_dir}: no bounds.json there; run qubo-round bench first")
    rows = rows_of(a.run_dir, a.bits, a.solvers, a.seed)
    if not rows:
        raise SystemExit(f"--run-dir {a.run_dir}: no layer problem at bits {a.bits} with per-row bounds")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    with open(a.out.with_suffix(".csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    md = markdown(rows)
    a.out.with_suffix(".md").write_text(f"Run directory: {a.run_dir}; solvers {a.solvers}; seed {a.seed}.\n\n{md}\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
