"""Covariance form (``form="auto"``) against the forced data form of AdaRound, whole digits CNN.

Both runs go through :func:`qubo_round.pipeline.quantize_model` with the same AdaRound settings
(10k iterations, the paper's batch of 32 samples for the data form), in one process, alternating
their order over ``--repeats`` rounds so that both see the same machine load. Per layer: the form
used, wall time of the layer (statistics capture included), time inside the solver (the
relaxation's loop, measured by wrapping the covariance solver and the data form's optimiser),
iterations done, milliseconds per iteration, and the final ``loss`` of the report (the asymmetric
reconstruction loss of the hard rounding on all calibration data). For the whole model: wall time,
solver time, total loss, test accuracy, and the ratios ``data / auto``::

    python benchmarks/forms_speed.py [--bits 3] [--samples 1024] [--iterations 10000] [--repeats 2] \\
        [--seed 0] [--threads 1] [--also-covariance]

writes ``benchmarks/results/forms_speed.md`` and ``.json``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import time
from contextlib import contextmanager
from pathlib import Path

import torch

import qubo_round.pipeline.run as run_mod
import qubo_round.relaxations.data_form as data_form
from qubo_round.pipeline import QuantConfig, quantize_model
from qubo_round.zoo import load_model

log = logging.getLogger("forms_speed")
RESULTS = Path(__file__).parent / "results"


@contextmanager
def instrumented(events: list):
    """Record (layer label, form, solver seconds, iterations done) of every covariance solve and
    every data-form group optimisation while the block runs."""
    orig_solver_for, orig_opt = run_mod._solver_for, data_form._optimise

    class Timed:
        def __init__(self, solver):
            self._s = solver

        def solve(self, problem, **kw):
            r = self._s.solve(problem, **kw)
            events.append(dict(layer=problem.meta.get("layer"), form="covariance", seconds=r.info["total_seconds"],
                               iterations=r.info.get("iterations_done")))
            return r

        def __getattr__(self, k):
            return getattr(self._s, k)

    def solver_for(*a, **kw):
        return Timed(orig_solver_for(*a, **kw))

    def optimise(*a, **kw):
        t0 = time.perf_counter()
        V, info = orig_opt(*a, **kw)
        label = a[-1] if len(a) >= 13 else kw.get("label", "")
        events.append(dict(layer=str(label).split("[")[0], form="data", seconds=time.perf_counter() - t0,
                           iterations=info["iterations_done"]))
        return V, info

    run_mod._solver_for, data_form._optimise = solver_for, optimise
    try:
        yield
    finally:
        run_mod._solver_for, data_form._optimise = orig_solver_for, orig_opt


def one_run(bundle, calib, form, bits, iterations, seed, batch_size):
    cfg = QuantConfig(bits=bits, solver="adaround", solver_params={"iterations": iterations}, form=form, seed=seed,
                      batch_size=batch_size)
    events: list = []
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    with instrumented(events):
        q, rep = quantize_model(bundle.model, calib, cfg, device="cpu", progress=False)
    wall = time.perf_counter() - t0
    layers = []
    for r in rep.layers:
        ev = [e for e in events if e["layer"] == r.name]
        solve = sum(e["seconds"] for e in ev)
        its = sum(e["iterations"] or 0 for e in ev)
        layers.append(dict(name=r.name, shape=f"{r.rows}x{r.cols}" + (f" ({r.groups} groups)" if r.groups > 1 else ""),
                           form=r.form, layer_seconds=r.seconds, solve_seconds=solve, iterations=its,
                           ms_per_iteration=1e3 * solve / max(its, 1), nearest_loss=r.nearest_loss, loss=r.loss))
    return dict(form=form, wall_seconds=wall, solve_seconds=sum(x["solve_seconds"] for x in layers),
                total_loss=sum(x["loss"] for x in layers), total_nearest_loss=sum(x["nearest_loss"] for x in layers),
                accuracy=bundle.evaluate(q)["accuracy"], layers=layers, load_before=load0, load_after=os.getloadavg()[0])


def to_markdown(meta, runs, summary) -> str:
    forms = meta["forms"]
    first = {f: next(r for r in runs if r["form"] == f) for f in forms}
    med = lambda f, k: statistics.median(r[k] for r in runs if r["form"] == f)  # noqa: E731
    lines = [f"# Covariance (auto) form against the forced data form: digits CNN, {meta['bits']} bits", "",
             f"`python benchmarks/forms_speed.py {meta['argv']}`", "",
             f"AdaRound, {meta['iterations']} iterations per layer (both forms stop early only when every h is "
             f"clipped and frozen), data form batch {meta['batch_size']} samples, {meta['samples']} calibration "
             f"images (seed 0), seed {meta['seed']}, per-channel symmetric MSE grid; {meta['repeats']} rounds, order "
             f"alternated; times are medians over rounds. Machine: {meta['machine']}, {meta['cpus']} CPU cores "
             f"shared with another benchmark (load average {meta['load_start']:.1f} at start, {meta['load_end']:.1f} "
             f"at end, per-run values in the JSON), torch {meta['torch']} on {meta['threads']} thread(s).", "",
             "## Whole model", "",
             "| form | wall s | solver s | total loss | total nearest loss | accuracy |", "|---|---|---|---|---|---|"]
    for f in forms:
        lines.append(f"| {f} | {med(f, 'wall_seconds'):.1f} | {med(f, 'solve_seconds'):.1f} | {first[f]['total_loss']:.4g} | "
                     f"{first[f]['total_nearest_loss']:.4g} | {100 * first[f]['accuracy']:.2f}% |")
    lines += ["", f"Ratio data / auto: wall time **{summary['wall_ratio']:.2f}x** (per round: "
              f"{', '.join(f'{x:.2f}' for x in summary['wall_ratios'])}), solver time **{summary['solve_ratio']:.2f}x**; "
              f"total loss auto / data {summary['loss_ratio']:.3f}.", ""]
    b = summary.get("bound")
    if b:
        lines += ["What bounds the ratio: " + b["text"], ""]
    lines += ["## Per layer (first round's losses; median times)", "",
              "| layer | shape | " + " | ".join(f"{f}: form, loss, layer s, solver s, ms/iter" for f in forms) + " |",
              "|---|---|" + "---|" * len(forms)]
    for i, L in enumerate(first[forms[0]]["layers"]):
        cells = []
        for f in forms:
            x = first[f]["layers"][i]
            ls = statistics.median(r["layers"][i]["layer_seconds"] for r in runs if r["form"] == f)
            ss = statistics.median(r["layers"][i]["solve_seconds"] for r in runs if r["form"] == f)
            ms = statistics.median(r["layers"][i]["ms_per_iteration"] for r in runs if r["form"] == f)
            cells.append(f"{x['form']}, {x['loss']:.4g}, {ls:.1f}, {ss:.1f}, {ms:.3f}")
        lines.append(f"| {L['name']} | {L['shape']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def bound(runs) -> dict:
    """Amdahl's bound on the data / auto ratio: the layers where auto's form is not cheaper per
    iteration than the data form take the same time in both runs, whatever the other layers cost."""
    med = lambda f, i, k: statistics.median(r["layers"][i][k] for r in runs if r["form"] == f)  # noqa: E731
    auto = next(r for r in runs if r["form"] == "auto")
    slow = [i for i, L in enumerate(auto["layers"])
            if med("auto", i, "ms_per_iteration") >= 0.8 * med("data", i, "ms_per_iteration")]
    if not slow:
        return {}
    t_slow = sum(med("auto", i, "solve_seconds") for i in slow)
    t_auto = statistics.median(r["solve_seconds"] for r in runs if r["form"] == "auto")
    t_data = statistics.median(r["solve_seconds"] for r in runs if r["form"] == "data")
    names = ", ".join(auto["layers"][i]["name"] for i in slow)
    per_it = "; ".join(f"{auto['layers'][i]['name']}: {med('auto', i, 'ms_per_iteration'):.3f} ms (auto, "
                       f"{auto['layers'][i]['form']}) vs {med('data', i, 'ms_per_iteration'):.3f} ms (data)" for i in slow)
    floor = min(med("auto", i, "ms_per_iteration") for i in range(len(auto["layers"])))
    text = (f"{names} cost{'s' if len(slow) == 1 else ''} about as much per iteration in auto's form as in the data "
            f"form ({per_it}) and take{'s' if len(slow) == 1 else ''} {t_slow:.1f} s of auto's {t_auto:.1f} s of solver "
            f"time ({100 * t_slow / t_auto:.0f}%): even if every other layer cost nothing, the solver-time ratio could "
            f"not exceed {t_data:.1f} / {t_slow:.1f} = {t_data / t_slow:.1f}x. Below that, every iteration of every "
            f"problem pays a fixed cost of the ~25 small tensor operations both forms share (the cheapest problem "
            f"here: {floor:.3f} ms per iteration).")
    return dict(layers=names, auto_seconds=t_slow, max_ratio=t_data / t_slow, text=text)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bits", type=int, default=3)
    ap.add_argument("--samples", type=int, default=1024)
    ap.add_argument("--iterations", type=int, default=10000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--also-covariance", action="store_true", help="also run form='covariance' on every layer")
    ap.add_argument("--out", type=Path, default=RESULTS / "forms_speed.md")
    ap.add_argument("--render", type=Path, help="only rewrite the markdown of an earlier run from its JSON")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.render:
        d = json.loads(args.render.read_text())
        d["summary"]["bound"] = bound(d["runs"])
        args.render.with_suffix(".md").write_text(to_markdown(d["meta"], d["runs"], d["summary"]))
        args.render.write_text(json.dumps(d, indent=1))
        return
    logging.getLogger("qubo_round").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    import sys
    forms = ["auto", "data"] + (["covariance"] if args.also_covariance else [])
    meta = dict(argv=" ".join(sys.argv[1:] if argv is None else argv), bits=args.bits, samples=args.samples,
                iterations=args.iterations, batch_size=args.batch_size, repeats=args.repeats, seed=args.seed,
                threads=args.threads, forms=forms, machine=platform.machine(), cpus=os.cpu_count(),
                torch=torch.__version__, load_start=os.getloadavg()[0])
    bundle = load_model("digits")
    calib = bundle.calibration(args.samples, 0)
    runs = []
    for k in range(args.repeats):
        for f in (forms if k % 2 == 0 else forms[::-1]):
            r = one_run(bundle, calib, f, args.bits, args.iterations, args.seed, args.batch_size)
            r["round"] = k
            runs.append(r)
            log.info("round %d %-10s wall %.1fs solver %.1fs loss %.4g accuracy %.2f%% (load %.1f)", k, f,
                     r["wall_seconds"], r["solve_seconds"], r["total_loss"], 100 * r["accuracy"], r["load_after"])
    meta["load_end"] = os.getloadavg()[0]
    pairs = [(next(r for r in runs if r["round"] == k and r["form"] == "data"),
              next(r for r in runs if r["round"] == k and r["form"] == "auto")) for k in range(args.repeats)]
    wall = [d["wall_seconds"] / a["wall_seconds"] for d, a in pairs]
    solve = [d["solve_seconds"] / a["solve_seconds"] for d, a in pairs]
    summary = dict(wall_ratio=statistics.median(wall), wall_ratios=wall, solve_ratio=statistics.median(solve),
                   solve_ratios=solve, loss_ratio=pairs[0][1]["total_loss"] / pairs[0][0]["total_loss"],
                   auto_loss=pairs[0][1]["total_loss"], data_loss=pairs[0][0]["total_loss"])
    summary["bound"] = bound(runs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(to_markdown(meta, runs, summary))
    args.out.with_suffix(".json").write_text(json.dumps(dict(meta=meta, summary=summary, runs=runs), indent=1))
    log.info("wrote %s: data/auto wall %.2fx, solver %.2fx, loss auto/data %.3f", args.out, summary["wall_ratio"],
             summary["solve_ratio"], summary["loss_ratio"])


if __name__ == "__main__":
    main()
