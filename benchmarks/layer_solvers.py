"""Layer-QUBO solvers head to head: energies per row at a time budget, and whole-layer totals.

Two parts, on the embedded digits CNN (per-channel symmetric MSE grid, covariance form, 1024
calibration images, seed 0: the problems of ``qubo-round problem --model digits --samples 1024``):

* ``rows``: rows 0-3 of fc1 at 2 bits, each row solved alone, every solver's energy (the row's
  reconstruction loss, offset included) at a budget of 0.25 s, 1 s and 5 s per row. Solvers that take no
  time budget (gptq, adaround, greedy) run once; their own time is shown.
* ``proofs``: the branch and bound (``bnb/60s``) on every row of fc2 and conv3 at those bits, and
  cut at 10 s per row on conv2's rows 0-3 (its certified bound over the energy).
* ``layers``: every layer (conv1, conv2, conv3's four groups, fc1, fc2) at 2 and 3 bits: the
  whole-layer total of every solver with its defaults, and of our composites given the wall
  time ``adaround`` took on the same problem as their time limit; the best total of the solvers
  we had before, and whether the composite is at or below it.

    python benchmarks/layer_solvers.py [--part rows|layers|proofs|all] [--budgets 1 5] [--bits 2 3]
        [--out benchmarks/results/layer_solvers]

Writes ``OUT.json``, ``OUT.md`` and (part ``rows``) ``OUT_time_to_target.png``, the energy each
solver reached against the seconds it had; prints the Markdown.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from qubo_round.bench.machine import machine

ROOT = Path(__file__).resolve().parents[1]
ROWS = (0, 1, 2, 3)
#: Solvers given the time budget per row: spec -> how the budget is passed.
TIMED = {"its": "time_limit", "gptq>its": "time_limit", "adaround/fast>its": "time_limit",
         "tabu": "timeout_ms", "anneal": "sweeps"}
UNTIMED = ("gptq", "gptq/act-order", "adaround", "greedy")
#: The solvers we had before the ITS, with their defaults (exact and sdp where they apply).
BEFORE = ("nearest", "greedy", "stochastic/best100", "gptq", "gptq/act-order", "adaround", "sigmoid-anneal",
          "ste", "anneal", "neal", "tabu", "cem", "sdp", "exact")
NEW = ("adaround/fast>its", "gptq>its", "its")
#: How the solvers we had before ran: the sdp solver refused rows over 300 free variables then
#: (fc1); without that cap it takes ~35 s per fc1 row here.
BEFORE_PARAMS = {"sdp": {"max_variables": 300}}


def build(layer: str, bits: int, samples: int = 1024, seed: int = 0):
    from qubo_round.extract import layer_problems
    from qubo_round.grid import Grid
    from qubo_round.zoo import load_model

    bundle = load_model("digits")
    return layer_problems(bundle.model, layer, bundle.calibration(samples, seed), Grid(bits=bits))


def _solve(spec: str, problem, seed: int, **kw):
    from qubo_round.solvers import get_solver
    t0 = time.perf_counter()
    r = get_solver(spec, **kw.pop("params", {})).solve(problem, seed=seed, **kw)
    return r, time.perf_counter() - t0


def timed_row(spec: str, row, budget: float, seed: int) -> tuple[float, float]:
    how = TIMED[spec]
    if how == "time_limit":
        r, s = _solve(spec, row, seed, time_limit=budget)
    elif how == "timeout_ms":  # dwave tabu: one read for the whole budget
        r, s = _solve(spec, row, seed, params={"timeout_ms": int(1000 * budget)})
    else:  # our annealer: sweeps scaled to fill the budget (measured rate of a short run)
        _, s0 = _solve(spec, row, seed, params={"num_sweeps": 1000})
        sweeps = max(100, int(1000 * budget / max(s0, 1e-3)))
        r, s = _solve(spec, row, seed, params={"num_sweeps": sweeps})
    return float(r.best_energies[0]), s


def part_rows(budgets: list[float], seed: int) -> dict:
    fam = build("fc1", 2)[0]
    out = {"rows": list(ROWS), "free": [int(fam.num_free[k]) for k in ROWS], "budgets": budgets, "energies": {}}
    _solve("its", fam.select_rows(np.array([0])), seed, params={"sweeps": 1})  # compile once, untimed
    for spec in TIMED:
        for b in budgets:
            res = [timed_row(spec, fam.select_rows(np.array([k])), b, seed) for k in ROWS]
            out["energies"][f"{spec} @ {b:g} s"] = {"energy": [e for e, _ in res], "seconds": [s for _, s in res]}
            print(f"  {spec} @ {b:g} s: {[f'{e:.6g}' for e, _ in res]}", file=sys.stderr, flush=True)
    for spec in UNTIMED:
        res = [_solve(spec, fam.select_rows(np.array([k])), seed) for k in ROWS]
        out["energies"][spec] = {"energy": [float(r.best_energies[0]) for r, _ in res],
                                 "seconds": [s for _, s in res]}
    return out


def part_layers(bits_list: list[int], seed: int) -> list[dict]:
    from qubo_round.solvers import CapabilityError
    _solve("its", build("fc2", 2)[0], seed, params={"sweeps": 1})  # load the compiled kernel, untimed
    out = []
    for bits in bits_list:
        for layer in ("conv1", "conv2", "conv3", "fc1", "fc2"):
            groups = build(layer, bits)
            rec = {"layer": layer, "bits": bits, "groups": len(groups), "rows": sum(p.rows for p in groups),
                   "max_free": int(max(p.num_free.max() for p in groups)), "totals": {}, "seconds": {}}
            ada_s = []
            for spec in BEFORE:
                tot, sec = 0.0, 0.0
                try:
                    for p in groups:
                        r, s = _solve(spec, p, seed, params=BEFORE_PARAMS.get(spec, {}))
                        tot, sec = tot + r.energy, sec + s
                        if spec == "adaround":
                            ada_s.append(s)
                except CapabilityError:
                    continue
                rec["totals"][spec], rec["seconds"][spec] = tot, sec
            for spec in NEW:
                tot, sec = 0.0, 0.0
                for p, limit in zip(groups, ada_s):
                    r, s = _solve(spec, p, seed, time_limit=limit)
                    tot, sec = tot + r.energy, sec + s
                rec["totals"][spec], rec["seconds"][spec] = tot, sec
            before = {k: v for k, v in rec["totals"].items() if k in BEFORE}
            rec["best_before"] = min(before, key=before.get)
            print(f"  {layer} W{bits}: best before {rec['best_before']} {before[rec['best_before']]:.6g}; "
                  f"adaround/fast>its {rec['totals']['adaround/fast>its']:.6g}", file=sys.stderr, flush=True)
            out.append(rec)
    return out


def plot_rows(R: dict, path: Path) -> None:
    """Energy reached vs seconds per row (log-log): a line per timed solver over the budgets, a
    point per untimed solver at its own time; the dotted line is the best energy seen."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(R["rows"]), figsize=(4.2 * len(R["rows"]), 3.6), squeeze=False)
    for i, (ax, k) in enumerate(zip(axes[0], R["rows"])):
        best = min(v["energy"][i] for v in R["energies"].values())
        for c, spec in enumerate(TIMED):
            pts = [(b, R["energies"][f"{spec} @ {b:g} s"]["energy"][i]) for b in R["budgets"]]
            ax.plot(*zip(*pts), marker="o", color=f"C{c}", label=spec)
        for c, spec in enumerate(UNTIMED, start=len(TIMED)):
            v = R["energies"][spec]
            ax.scatter([v["seconds"][i]], [v["energy"][i]], marker="x", s=50, color=f"C{c}", label=spec)
        ax.axhline(best, color="k", ls=":", lw=0.8)
        ax.set(xscale="log", yscale="log", xlabel="seconds (budget per row)", title=f"fc1 W2 row {k}")
        if i == 0:
            ax.set_ylabel("energy (row loss)")
    axes[0][-1].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def part_proofs(bits_list: list[int], seed: int, conv2_seconds: float = 10.0) -> list[dict]:
    """``bnb/60s`` on every row of fc2 and of conv3's groups, and ``bnb`` with ``conv2_seconds`` per
    row on conv2's rows 0-3: proven rows, nodes, seconds, and the certified bound over the energy
    (1 on proven rows)."""
    out = []
    _solve("its", build("fc2", 2)[0], seed, params={"sweeps": 1})  # load the compiled kernels, untimed
    for bits in bits_list:
        cases = [(layer, g, p, "bnb/60s", {}) for layer in ("fc2", "conv3") for g, p in enumerate(build(layer, bits))]
        cases.append(("conv2 rows 0-3", 0, build("conv2", bits)[0].select_rows(np.arange(4)), "bnb",
                      {"time_per_row": conv2_seconds}))
        for layer, g, p, spec, kw in cases:
            r, s = _solve(spec, p, seed, params=kw)
            ratio = r.lower_bound / r.best_energies
            out.append({"layer": layer, "group": g, "bits": bits, "rows": p.rows, "max_free": int(p.num_free.max()),
                        "proven": int(r.info["proven"].sum()), "max_nodes": int(r.info["nodes"].max()),
                        "seconds": s, "energy": r.energy, "bound_ratio": [float(ratio.min()), float(ratio.max())]})
            print(f"  {layer} g{g} W{bits}: {out[-1]['proven']}/{p.rows} proven in {s:.1f} s", file=sys.stderr)
    return out


def markdown(report: dict) -> str:
    lines = [f"Machine: {report['machine']}; seed {report['seed']}.", ""]
    if "rows" in report:
        R = report["rows"]
        lines += ["### fc1 at 2 bits, rows 0-3 (each row alone): energy at a budget per row", "",
                  "| solver | " + " | ".join(f"row {k} ({m} free)" for k, m in zip(R["rows"], R["free"])) + " |",
                  "|---|" + "---:|" * len(R["rows"])]
        for name, v in R["energies"].items():
            secs = "" if "@" in name else f" (own time {max(v['seconds']):.2f} s)"
            lines.append(f"| {name}{secs} | " + " | ".join(f"{e:.6g}" for e in v["energy"]) + " |")
        lines.append("")
    if "proofs" in report:
        lines += ["### Branch and bound: proofs on fc2 and conv3 (`bnb/60s`), conv2 rows 0-3 cut at 10 s per row",
                  "", "| layer | group | bits | rows | max free | proven | most nodes in a row | seconds (group) "
                  "| bound / energy |", "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for P in report["proofs"]:
            lo, hi = P["bound_ratio"]
            lines.append(f"| {P['layer']} | {P['group']} | {P['bits']} | {P['rows']} | {P['max_free']} | "
                         f"{P['proven']}/{P['rows']} | {P['max_nodes']} | {P['seconds']:.1f} | {lo:.2f}-{hi:.2f} |")
        lines.append("")
    if "layers" in report:
        lines += ["### Whole layers: total loss per solver (composites limited to adaround's wall time)", "",
                  "| layer | bits | rows | max free | best before (solver) | adaround (s) | adaround/fast>its (s) "
                  "| gptq>its | its | at or below best before |", "|---|---:|---:|---:|---|---:|---:|---:|---:|---|"]
        for L in report["layers"]:
            t, s = L["totals"], L["seconds"]
            b = L["best_before"]
            ok = t["adaround/fast>its"] <= t[b] * (1 + 1e-12)
            lines.append(f"| {L['layer']} | {L['bits']} | {L['rows']} | {L['max_free']} | {t[b]:.6g} ({b}) | "
                         f"{t['adaround']:.6g} ({s['adaround']:.2f}) | {t['adaround/fast>its']:.6g} "
                         f"({s['adaround/fast>its']:.2f}) | {t['gptq>its']:.6g} | {t['its']:.6g} | "
                         f"{'yes' if ok else 'no'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("rows", "layers", "proofs", "all"), default="all")
    ap.add_argument("--budgets", type=float, nargs="+", default=[0.25, 1.0, 5.0])
    ap.add_argument("--bits", type=int, nargs="+", default=[2, 3])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "layer_solvers")
    a = ap.parse_args(argv)
    if any(b <= 0 for b in a.budgets):
        raise SystemExit("--budgets: every budget must be > 0 seconds")
    report = {"machine": machine(), "seed": a.seed}
    if a.part in ("rows", "all"):
        report["rows"] = part_rows(a.budgets, a.seed)
    if a.part in ("layers", "all"):
        report["layers"] = part_layers(a.bits, a.seed)
    if a.part in ("proofs", "all"):
        report["proofs"] = part_proofs(a.bits, a.seed)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    md = markdown(report)
    if "rows" in report:
        plot_rows(report["rows"], a.out.with_name(a.out.name + "_time_to_target.png"))
        md += f"\n\n![energy reached vs seconds per row]({a.out.name}_time_to_target.png)"
    a.out.with_suffix(".md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
