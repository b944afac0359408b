"""Solver league: every registered solver on the same layer problems of the digits CNN, measured
against the exact optimum or a certified lower bound, and the accuracy its rounding buys.

Part 1, the layer problems. Every supported layer of the digits model (conv1, conv2, the four
groups of conv3, fc1, fc2) at 2/3/4 bits, per-channel symmetric MSE grid, local-MSE QUBO of
eq. 20 (``layer_problems(form="covariance")``, ``H = E[x x^T]`` from ``SAMPLES`` calibration
images). Each row ``k`` is an independent QUBO ``E_k(v) = v^T Q_k v + c_k`` over the rounding
choices ``v`` of output channel ``k``. Large layers keep a seeded subset of rows
(:data:`ROWS`). The reference ``R_k`` of row ``k`` is

* the exact optimum (``exact`` solver, rows with at most 24 free variables), else
* the certified SDP lower bound (:func:`qubo_round.bounds.certify` of the Burer-Monteiro dual,
  valid even if the SDP stops early), reported by the ``sdp`` solver run of the league itself
  (its per-row ``lower_bound``; rows up to 300 free variables), else
* none: fc1's rows have ~500 free variables, where the SDP takes ~110 s per row on this machine
  and its bound is ~0 (the trivial bound: every energy is a squared norm); there only the gap to
  the best energy any solver found is reported.

Gaps are relative, ``(E_k - R_k) / R_k``, averaged over rows (seeds averaged first). "Gap to
best" uses the lowest energy any solver (any seed) found for the row instead of ``R_k``: a lower
bound on the true gap, while the gap to a bound is an upper bound on it.

Part 2, the whole network. Each solver rounds every layer through the pipeline
(``quantize_model(solver=...)``: asymmetric reconstruction, covariance form), test accuracy on the
540 held-out images; random solvers over several seeds (mean ± std). ``exact`` and ``sdp`` cannot
run on the whole network (rows with 60-500 free variables), ``dimod:*`` wrappers are skipped
(they duplicate ``neal``/``tabu`` through dimod and are slower).
"""
from __future__ import annotations

import logging
import math
import zlib
from typing import Any

import numpy as np

from .common import Lab, StudyContext, mean_std, pm, threads

log = logging.getLogger(__name__)

#: Bump when the way cells are computed changes (invalidates the cache).
VERSION = 2
#: Calibration images (training split) for both parts.
SAMPLES = 1024
#: Free variables per row up to which the exact optimum is computed.
EXACT_MAX_FREE = 24
#: Free variables per row up to which the SDP bound / solver runs (the sdp solver's limit).
SDP_MAX_FREE = 300
#: Rows kept per problem (per conv group) in the full run; None keeps all. Seeded choice.
ROWS = {"conv1": None, "conv2": 4, "conv3": 2, "fc1": 6, "fc2": None}
ROWS_QUICK = {"conv1": 4, "fc2": 2}
#: Solvers whose result depends on the seed.
RANDOM = ("stochastic", "anneal", "neal", "tabu", "sdp", "cem", "its", "chain")
#: Registered solver -> the spec(s) raced: presets for the slow ones, two presets where both
#: are cheap and differ in kind. Solvers not listed race with their defaults.
SPECS = {
    "stochastic": ["stochastic/single", "stochastic"],  # one sample / best of 100 (the default)
    "neal": ["neal/fast"],            # defaults: 47 s on fc1 alone, 100 sweeps: ~10x less
    "cem": ["cem/quick"],             # population 64 x 50 iterations instead of 200 x 200
    "gptq": ["gptq", "gptq/act-order"],
    "tabu": ["tabu/restarts"],        # stops after 10 restarts, not on a clock: reproducible
    "bnb": ["bnb/5s"],                # proves what it can in 5 s per row, else a certified gap
    "chain": ["chain", "chain/adaround-its"],  # gptq>its and adaround/fast>its
}
#: Specs that cannot round the whole network, with the reason.
NETWORK_NA = {
    "exact": f"rows of conv2-fc2 have 60-500 free variables (limit {EXACT_MAX_FREE})",
    "sdp": f"fc1 rows have ~500 free variables (limit {SDP_MAX_FREE}; ~110 s per row)",
    "bnb": "5 s per row of every layer (~7 min on fc1 alone) for proofs the network does not need",
}
#: Layer problems: at most this many seeds for these random specs (their bound / energy barely
#: moves with the seed, and they are the slowest: SDP ~20 s per conv2 row, CEM ~9 s per fc1 row).
LAYER_MAX_SEEDS = {"sdp": 1, "cem/quick": 1}
#: Whole network: seeds per random spec at most this many, and only at these bit widths
#: (cem/quick spends ~3 min on fc1 alone: its 64 x 512 rows x population 64 x 50 iterations).
NETWORK_LIMITS = {"cem/quick": (1, (3,))}
QUICK_SPECS = ("nearest", "exact", "sdp/fast", "greedy", "gptq", "anneal/fast")
QUICK_NETWORK = ("nearest", "greedy")


def _base(spec: str) -> str:
    return spec.split("/")[0]


def solver_specs(quick: bool) -> tuple[list[str], list[str]]:
    """``(specs raced, dimod family names skipped)``."""
    from qubo_round.solvers import available_solvers
    from qubo_round.solvers.registry import available_families

    skipped = [f"{f}:*" for f in available_families()]
    if quick:
        return list(QUICK_SPECS), skipped
    specs = [s for name in available_solvers() for s in SPECS.get(name, [name])]
    return specs, skipped


# --- part 1: the layer problems -------------------------------------------------------------

class Problems:
    """The layer problems (built on first use only: a cached rerun never builds them)."""

    def __init__(self, lab: Lab, rows: dict[str, int | None], samples: int, calib_seed: int, row_seed: int) -> None:
        self.lab = lab
        self.rows, self.samples, self.calib_seed, self.row_seed = rows, samples, calib_seed, row_seed
        self._built: dict[tuple[int, str], Any] = {}

    def names(self) -> list[tuple[str, str, int]]:
        """``(instance, layer, group)``; conv3 has 4 groups."""
        from qubo_round.layers import get_layer

        model = self.lab.bundle("digits").model
        out = []
        for layer in self.rows:
            groups = get_layer(model, layer).groups
            out += [(layer if groups == 1 else f"{layer}-g{g}", layer, g) for g in range(groups)]
        return out

    def get(self, bits: int, instance: str, layer: str, group: int):
        key = (bits, instance)
        if key not in self._built:
            from qubo_round.extract import layer_problems
            from qubo_round.grid import Grid

            b = self.lab.bundle("digits")
            x = b.calibration(self.samples, self.calib_seed)
            for g, p in enumerate(layer_problems(b.model, layer, x, Grid(bits=bits), form="covariance")):
                name = layer if p.meta.get("groups", 1) == 1 else f"{layer}-g{g}"
                self._built[(bits, name)] = self._select(p, layer, g)
        return self._built[key]

    def _select(self, p, layer: str, group: int):
        keep = self.rows.get(layer)
        if keep is None or p.rows <= keep:
            return p
        rng = np.random.default_rng([self.row_seed, zlib.crc32(f"{layer}/{group}".encode())])
        return p.select_rows(np.sort(rng.choice(p.rows, size=keep, replace=False)))


def _solve_cell(problems: Problems, bits: int, inst: tuple[str, str, int], spec: str, seed: int) -> dict:
    """One solver on one (subsampled) layer problem: per-row energies, seconds, bound."""
    from qubo_round.solvers import get_solver

    p = problems.get(bits, *inst)
    free = p.num_free
    out: dict[str, Any] = {"free": free.tolist(), "rows": p.meta.get("rows_selected", list(range(p.rows))),
                           "energies": None, "lower_bound": None, "seconds": None, "status": None, "error": None}
    name = _base(spec)
    if name == "exact":
        small = np.flatnonzero(free <= EXACT_MAX_FREE)
        if small.size == 0:
            out["error"] = f"n/a: every row has more than {EXACT_MAX_FREE} free variables"
            return out
        sub = p if small.size == p.rows else p.select_rows(small)
        res = get_solver(spec, max_free=EXACT_MAX_FREE).solve(sub, seed=seed)
        e = np.full(p.rows, np.nan)
        e[small] = res.best_energies
        out.update(energies=e.tolist(), lower_bound=e.tolist(), seconds=res.seconds, status=res.status)
        return out
    if name == "sdp" and free.max() > SDP_MAX_FREE:
        out["error"] = f"n/a: rows with more than {SDP_MAX_FREE} free variables"
        return out
    try:
        res = get_solver(spec).solve(p, seed=seed)
    except Exception as e:  # noqa: BLE001 - a failing solver is a result of the league
        out["error"] = f"{type(e).__name__}: {' '.join(str(e).split())}"
        return out
    out.update(energies=res.best_energies.tolist(), seconds=res.seconds, status=res.status,
               lower_bound=None if res.lower_bound is None else np.asarray(res.lower_bound, float).tolist())
    return out


def _seeds(ctx: StudyContext, spec: str, n: int) -> list[int]:
    return [ctx.seed + i for i in range(n)] if _base(spec) in RANDOM else [ctx.seed]


def layer_part(ctx: StudyContext, specs: list[str], bits_list: list[int], rows: dict, seeds: int):
    """Run every spec on every problem; return per-row records and per-(spec, bits) times."""
    problems = Problems(ctx.lab, rows, SAMPLES, ctx.seed, ctx.seed)
    insts = problems.names()
    jobs = [(b, inst, spec, seed) for b in bits_list for inst in insts for spec in specs
            for seed in _seeds(ctx, spec, min(seeds, LAYER_MAX_SEEDS.get(spec, seeds)))]
    cells = {}
    for b, inst, spec, seed in ctx.bar(jobs, "layer problems"):
        key = {"study": "solver-league", "v": VERSION, "part": "layer", "bits": b, "instance": inst[0],
               "rows": rows.get(inst[1]), "solver": spec, "seed": seed, "samples": SAMPLES,
               "calib_seed": ctx.seed, "row_seed": ctx.seed}
        cells[(b, inst[0], spec, seed)] = ctx.cell(key, lambda: _solve_cell(problems, b, inst, spec, seed))
    return _row_records(cells, specs, bits_list, insts), cells


def _row_records(cells: dict, specs: list[str], bits_list: list[int], insts) -> list[dict]:
    """One record per (bits, instance, row, spec): energy (seed mean), reference, gaps."""
    from qubo_round.bounds import relative_gap

    records = []
    for b in bits_list:
        for inst, _, _ in insts:
            mine = {k: v for k, v in cells.items() if k[0] == b and k[1] == inst}
            any_cell = next(iter(mine.values()))
            free = any_cell["free"]
            for r in range(len(free)):
                if free[r] == 0:
                    continue  # nothing to choose: every solver returns the same rounding
                opt = [v["energies"][r] for (_, _, s, _), v in mine.items()
                       if _base(s) == "exact" and v["energies"] is not None]
                opt = opt[0] if opt and not math.isnan(opt[0]) else None
                sdp = [v["lower_bound"][r] for (_, _, s, _), v in mine.items()
                       if _base(s) == "sdp" and v["lower_bound"] is not None]
                bound = max(sdp) if sdp else None
                ref, kind = (opt, "exact") if opt is not None else \
                    (max(bound, 0.0), "sdp") if bound is not None else (None, "none")
                energies = {}
                for (_, _, s, _), v in mine.items():
                    if v["energies"] is not None and not math.isnan(v["energies"][r]):
                        energies.setdefault(s, []).append(v["energies"][r])
                best = min(min(e) for e in energies.values())
                for s in specs:
                    if s not in energies:
                        continue
                    e = energies[s]
                    g_ref = [float(relative_gap(x, ref)) for x in e] if ref else None
                    records.append({
                        "bits": b, "instance": inst, "row": mine[next(k for k in mine if k[2] == s)]["rows"][r],
                        "free": free[r], "solver": s, "seeds": len(e), "energy": float(np.mean(e)),
                        "reference": ref, "reference_kind": kind, "sdp_bound": bound, "best_found": best,
                        "gap_ref": float(np.mean(g_ref)) if g_ref else None,
                        "gap_best": float(np.mean([float(relative_gap(x, best)) for x in e])),
                    })
    return records


def _not_run(cells: dict, spec: str) -> str:
    """``error (instances)`` of the cells where ``spec`` did not run."""
    where: dict[str, list[str]] = {}
    for (b, inst, s, _), v in cells.items():
        if s == spec and v["error"]:
            where.setdefault(v["error"], []).append(f"{inst}@{b}")
    return "; ".join(f"{e} ({', '.join(dict.fromkeys(w))})" for e, w in where.items())


def _instance_kind(records: list[dict]) -> dict[tuple[int, str], str]:
    """``(bits, instance) -> "exact" | "sdp" | "none"``: the reference its rows have (the rows of one
    digits instance all have the same kind; a mixed one counts as its weakest)."""
    kinds: dict[tuple[int, str], set] = {}
    for r in records:
        kinds.setdefault((r["bits"], r["instance"]), set()).add(r["reference_kind"])
    order = ("none", "sdp", "exact")
    return {k: next(o for o in order if o in v) for k, v in kinds.items()}


def _summary(records: list[dict], cells: dict, specs: list[str]) -> list[dict]:
    """Per spec: mean gaps by reference kind and over all rows, and the wall time on the same
    instances (summed over instances, mean over seeds)."""
    kind_of = _instance_kind(records)
    out = []
    for s in specs:
        rs = [r for r in records if r["solver"] == s]
        seeds = max((r["seeds"] for r in rs), default=0)

        def secs(kind: str | None) -> float:
            v = [c["seconds"] for (b, inst, sp, _), c in cells.items() if sp == s and c["error"] is None
                 and (kind is None or kind_of.get((b, inst)) == kind)]
            return sum(v) / max(seeds, 1)

        ex = [r["gap_ref"] for r in rs if r["reference_kind"] == "exact"]
        sd = [r["gap_ref"] for r in rs if r["reference_kind"] == "sdp"]
        total = secs(None)
        out.append({
            "solver": s, "rows": len(rs), "seeds": seeds,
            "gap_optimum": float(np.mean(ex)) if ex else None, "rows_optimum": len(ex),
            "optimal_rows": f"{sum(g <= 1e-9 for g in ex)}/{len(ex)}" if ex else "-",
            "seconds_optimum": secs("exact"),
            "gap_sdp_bound": float(np.mean(sd)) if sd else None,
            "median_gap_sdp_bound": float(np.median(sd)) if sd else None, "rows_sdp": len(sd),
            "seconds_sdp": secs("sdp"),
            "gap_best": float(np.mean([r["gap_best"] for r in rs])) if rs else None,
            "median_gap_best": float(np.median([r["gap_best"] for r in rs])) if rs else None,
            "seconds": total, "ms_per_row": 1000 * total / max(len(rs), 1),
            "not_run": _not_run(cells, s),
        })
    return out


# --- part 2: the whole network --------------------------------------------------------------

def _network_cell(lab: Lab, spec: str, bits: int, seed: int, samples: int, calib_seed: int) -> dict:
    import time

    from qubo_round.pipeline import QuantConfig, quantize_model

    b = lab.bundle("digits")
    calib = b.calibration(samples, calib_seed)
    t0 = time.perf_counter()
    try:
        q, rep = quantize_model(b.model, calib, QuantConfig(bits=bits, solver=spec, seed=seed, polish=False),
                               progress=False)
    except Exception as e:  # noqa: BLE001
        return {"error": f"{type(e).__name__}: {' '.join(str(e).split())}"}
    return {"accuracy": lab.accuracy(q), "seconds": time.perf_counter() - t0, "error": None,
            "loss": rep.loss, "nearest_loss": rep.nearest_loss}


def network_part(ctx: StudyContext, specs: list[str], bits_seeds: dict[int, int], samples: int):
    """Accuracy of every spec's rounding of the whole network; ``bits_seeds``: seeds per bit width
    for random solvers."""
    lab = ctx.lab
    jobs = []
    for b, n in bits_seeds.items():
        for s in specs:
            most, widths = NETWORK_LIMITS.get(s, (n, (b,)))
            if _base(s) not in NETWORK_NA and b in widths:
                jobs += [(b, s, seed) for seed in _seeds(ctx, s, min(n, most))]
    out = {}
    for b, s, seed in ctx.bar(jobs, "whole network"):
        key = {"study": "solver-league", "v": VERSION, "part": "network", "bits": b, "solver": s,
               "seed": seed, "samples": samples, "calib_seed": ctx.seed}
        out[(b, s, seed)] = ctx.cell(key, lambda: _network_cell(lab, s, b, seed, samples, ctx.seed))
    return out


# --- the report -------------------------------------------------------------------------------

def _pareto(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """Points not dominated in (time, gap), sorted by time."""
    front, best = [], math.inf
    for t, g, s in sorted(points):
        if g < best:
            front.append((t, g, s))
            best = g
    return front


def _plot_pareto(ctx: StudyContext, summary: list[dict]) -> None:
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab20")
    style = {r["solver"]: (cmap(i % 20), "os^Dv<>p"[i % 8]) for i, r in enumerate(summary)}
    n_all = max(r["rows"] for r in summary)
    panels = (("gap_optimum", "seconds_optimum", "rows_optimum", "gap to the exact optimum"),
              ("gap_sdp_bound", "seconds_sdp", "rows_sdp", "gap to the certified SDP bound"),
              ("gap_best", "seconds", "rows", "gap to the best found"))
    with ctx.figure("pareto", "Mean relative gap versus wall time on the same rows, one panel per "
                    "reference: left, rows with an exact optimum; middle, rows with a certified SDP bound "
                    "(an upper bound on the true gap); right, every row, gap to the best energy any solver "
                    "found (a lower bound on it; solvers that ran on every row only). Time: summed over "
                    "the panel's layer instances, mean over seeds. Dashed: Pareto front.",
                    ncols=3, figsize=(16, 5.2)) as (fig, axes):
        for ax, (gcol, tcol, ncol, label) in zip(axes, panels):
            counts = [r[ncol] for r in summary if r[gcol] is not None]
            full = max(counts, default=0)
            pts = [(max(r[tcol], 1e-5), r[gcol], r["solver"]) for r in summary
                   if r[gcol] is not None and r[ncol] == full and (ncol != "rows" or r["rows"] == n_all)]
            for t, g, s in pts:
                c, m = style[s]
                ax.scatter(t, g, color=c, marker=m, s=45, label=s)
            front = _pareto(pts)
            if front:
                ax.plot([p[0] for p in front], [p[1] for p in front], "k--", lw=0.8)
            ax.set_xscale("log")
            ax.set_yscale("symlog", linthresh=1e-3)
            ax.set_ylim(0, 2 * max([g for _, g, _ in pts] + [1e-3]))
            ax.set_xlabel("wall time (s, log)")
            ax.set_ylabel(f"mean {label} (symlog)")
            ax.set_title(f"{label} ({full} rows)", fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
        handles = {}
        for ax in axes:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(lab, h)
        axes[2].legend(handles.values(), handles.keys(), fontsize=7, ncol=2)


#: Solvers whose mean gap to best exceeds this are left out of the accuracy plot (floor, ceil).
PLOT_MAX_GAP = 100.0


def _plot_accuracy(ctx: StudyContext, records: list[dict], net: dict, bits_list: list[int], float_acc: float) -> None:
    """One panel per bit width: whole-network accuracy against the layer problems' mean gap."""
    import matplotlib.pyplot as plt

    bits_list = [b for b in bits_list if any(k[0] == b for k in net)]
    if not bits_list:
        return
    specs = list(dict.fromkeys(s for _, s, _ in net))
    cmap = plt.get_cmap("tab20")
    left_out = set()
    with ctx.figure("accuracy_vs_gap", "Whole-network test accuracy (mean ± std over seeds) against the "
                    "solver's mean gap to the best found on that bit width's layer problems (log); "
                    f"solvers with a mean gap above {PLOT_MAX_GAP:g} (floor, ceil) are left out.",
                    ncols=len(bits_list), figsize=(5.5 * len(bits_list), 4.8), squeeze=False) as (fig, axes):
        for ax, b in zip(axes[0], bits_list):
            for i, s in enumerate(specs):
                accs = [100 * v["accuracy"] for (bb, ss, _), v in net.items() if bb == b and ss == s and not v["error"]]
                gaps = [r["gap_best"] for r in records if r["solver"] == s and r["bits"] == b]
                if not accs or not gaps:
                    continue
                g = float(np.mean(gaps))
                if g > PLOT_MAX_GAP:
                    left_out.add(s)
                    continue
                m, sd = mean_std(accs)
                ax.errorbar(max(g, 1e-3), m, yerr=sd, fmt="os^Dv<>p"[i % 8], color=cmap(i % 20), capsize=3, label=s)
            ax.axhline(100 * float_acc, color="grey", ls=":", label="float")
            ax.set_xscale("log")
            ax.set_xlabel("mean gap to best found, layer problems (log)")
            ax.set_ylabel("test accuracy (%)")
            ax.set_title(f"{b} bits", fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
        axes[0][-1].legend(fontsize=7, ncol=2)


def _acc_cell(net: dict, spec: str, bits: int) -> str:
    vals = [v for (b, s, _), v in net.items() if b == bits and s == spec]
    if not vals:
        return "n/a" if _base(spec) in NETWORK_NA else "-"
    if any(v["error"] for v in vals):
        return "error"
    accs = [v["accuracy"] for v in vals]
    if _base(spec) not in RANDOM:
        return f"{100 * accs[0]:.2f}"
    if len(accs) == 1:
        return f"{100 * accs[0]:.2f} (1 seed)"
    return pm(accs, 100) + f" ({len(accs)} seed{'s' if len(accs) > 1 else ''})"


def run(ctx: StudyContext) -> None:
    lab = ctx.lab
    specs, skipped = solver_specs(ctx.quick)
    bits_list = ctx.pick([2, 3, 4], [3])
    rows = ctx.pick(ROWS, ROWS_QUICK)
    seeds_layer = ctx.pick(2, 1)
    bits_seeds = ctx.pick({3: 3, 2: 2, 4: 2}, {3: 1})
    samples_net = ctx.pick(SAMPLES, 256)
    net_specs = [s for s in ctx.pick(specs, list(QUICK_NETWORK))]
    with threads(1, blas=False):
        records, cells = layer_part(ctx, specs, bits_list, rows, seeds_layer)
        summary = _summary(records, cells, specs)
        net = network_part(ctx, net_specs, bits_seeds, samples_net)
        float_acc = ctx.cell({"study": "solver-league", "part": "float"}, lambda: lab.accuracy(lab.bundle("digits").model))

    kinds = {k: sum(1 for r in records if r["reference_kind"] == k and r["solver"] == specs[0])
             for k in ("exact", "sdp", "none")}
    row_desc = ", ".join(f"{k}: {'all' if v is None else v}" + (" per group" if k == "conv3" and v else "")
                         for k, v in rows.items())
    fewer = ", ".join(f"{k} ({v})" for k, v in LAYER_MAX_SEEDS.items())
    ctx.text(f"""
## Setup

- Layer problems: digits CNN, layers {', '.join(rows)}, {'/'.join(map(str, bits_list))} bits, per-channel
  symmetric MSE grid, local-MSE QUBO (eq. 20) from {SAMPLES} calibration images (seed {ctx.seed}).
  Rows kept per problem (seeded choice, seed {ctx.seed}): {row_desc}.
  Row problems with free variables: {kinds['exact'] + kinds['sdp'] + kinds['none']} over all bit widths;
  reference = exact optimum for {kinds['exact']}, certified SDP bound for {kinds['sdp']}, none for
  {kinds['none']} (fc1: ~500 free variables per row, beyond the SDP's limit; only "gap to best" there).
- Solvers: {', '.join(specs)}. Random ones ({', '.join(RANDOM)}) run with {seeds_layer} seeds on the layer
  problems (energies averaged over seeds), except {fewer}. Skipped: {', '.join(skipped)}
  (dimod wrappers of samplers that `neal`/`tabu` already run natively). Presets for slow solvers: neal/fast (100 sweeps; the default takes
  ~47 s on fc1 alone), cem/quick (population 64, 50 iterations).
- Gap = (E - R) / R per row, mean over rows; R = optimum (exact), certified SDP lower bound (so the gap
  is an upper bound on the true gap), or the best energy found by any solver and seed ("gap to best", a
  lower bound on the true gap). Times: solver wall time summed over all layer instances (mean over
  seeds); single thread, 2 shared cores.
- Whole network: `quantize_model(QuantConfig(bits, solver=SPEC, seed, polish=False))` (asymmetric reconstruction,
  covariance form), {samples_net} calibration images (seed {ctx.seed}), test accuracy on 540 images
  (one image = 0.185 points); random solvers over {', '.join(f'{n} seeds at {b} bits' for b, n in bits_seeds.items())};
  deterministic ones once. Float accuracy {100 * float_acc:.2f}%.
""")
    net_bits = sorted(bits_seeds)
    table = []
    n_all = max(r["rows"] for r in summary)
    for r in sorted(summary, key=lambda r: (r["rows"] < n_all, r["gap_best"] is None, r["gap_best"] or 0)):
        row = {"solver": r["solver"], "rows": r["rows"], "gap to optimum": r["gap_optimum"],
               "optimal rows": r["optimal_rows"], "gap to SDP bound": r["gap_sdp_bound"],
               "median gap to SDP bound": r["median_gap_sdp_bound"], "gap to best": r["gap_best"],
               "median gap to best": r["median_gap_best"], "time (s)": r["seconds"], "ms/row": r["ms_per_row"]}
        for b in net_bits:
            row[f"acc {b}-bit (%)"] = _acc_cell(net, r["solver"], b)
        table.append(row)
    ctx.table(table, title="League (sorted by mean gap to the best found; solvers that could not run on "
                           "every row last)")
    notes = [f"- `{r['solver']}`: {r['not_run']}" for r in summary if r["not_run"]]
    notes += [f"- `{s}` on the whole network: n/a, {why}" for s, why in NETWORK_NA.items()
              if any(_base(x) == s for x in specs)]
    notes += [f"- `{s}` on the whole network: only {most} seed(s), at {'/'.join(map(str, w))} bits (cost)"
              for s, (most, w) in NETWORK_LIMITS.items() if s in net_specs]
    if notes:
        ctx.text("Not run:\n\n" + "\n".join(notes))
    per_bits = []
    for s in specs:
        row = {"solver": s}
        for b in bits_list:
            g = [r["gap_best"] for r in records if r["solver"] == s and r["bits"] == b]
            row[f"gap to best {b}-bit"] = float(np.mean(g)) if g else None
        for b in bits_list:
            g = [r["gap_ref"] for r in records if r["solver"] == s and r["bits"] == b and r["gap_ref"] is not None]
            row[f"gap to optimum or SDP bound {b}-bit"] = float(np.mean(g)) if g else None
        per_bits.append(row)
    ctx.table(per_bits, title="Mean gap per bit width")
    per_layer = []
    for s in specs:
        row = {"solver": s}
        for layer in rows:
            g = [r["gap_best"] for r in records if r["solver"] == s and r["instance"].split("-g")[0] == layer]
            row[layer] = float(np.mean(g)) if g else None
        per_layer.append(row)
    ctx.table(per_layer, title="Mean gap to best found per layer (all bit widths)")
    net_rows = []
    for (b, s, seed), v in sorted(net.items(), key=lambda kv: (kv[0][0], specs.index(kv[0][1]), kv[0][2])):
        net_rows.append({"bits": b, "solver": s, "seed": seed, **v})
    ctx.table([{"bits": r["bits"], "solver": r["solver"], "seed": r["seed"],
                "accuracy (%)": None if r["error"] else 100 * r["accuracy"],
                "total loss": r.get("loss"), "nearest loss": r.get("nearest_loss"),
                "seconds": r.get("seconds"), "error": r["error"] or ""} for r in net_rows],
              title="Whole network, every run (loss: asymmetric reconstruction loss summed over layers)")
    _plot_pareto(ctx, summary)
    _plot_accuracy(ctx, records, net, net_bits, float_acc)
    ctx.csv("rows", records)
    ctx.csv("summary", summary)
    ctx.csv("network", net_rows)
    log.info("solver-league: %d row records, %d network runs", len(records), len(net_rows))

