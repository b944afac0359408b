"""Covariance form (``form="auto"``) against the forced data form of AdaRound, whole digits CNN.

Both runs go through :func:`qubo_round.pipeline.quantize_model` with the same AdaRound settings
(10k iterations, the paper's batch of 32 samples for the data form), in one process, alternating
their order over ``--repeats`` rounds so that both see the same machine load, first as the
relaxation alone (``polish=False``), then with the pipeline's default polish (single flips on each
layer's QUBO, after the solver) on both; last ``fast+polish``, the preset ``adaround/fast`` (2k
iterations) with the polish, for the time to an equal or lower loss (these three only at the
default 10k iterations; ``VARIANTS`` lists every run). Per layer: the form used,
the mini-batch columns and the matrix-product flops of either form, wall time of the layer
(statistics capture included), time inside the solver (the covariance solver's ``solve``, the data
form's optimisation loop: the report's ``solve_seconds``), milliseconds per iteration, and the final
``loss`` of the report (the asymmetric reconstruction loss of the hard rounding on all calibration
data). For the whole model: wall time, solver time, total loss, test accuracy, the ratios
``data / auto``, the flop ratio and a floor under auto's wall time (``product_floor``). Last, the same comparison on two random 3x3 convolutions with
16 x 16 inputs: 8192 columns per mini-batch, nearer the paper's ImageNet layers (32 images x 56 x 56
= 100k columns in ResNet's first stage) than the digits model's 2048 at most::

    python benchmarks/forms_speed.py [--bits 3] [--samples 1024] [--iterations 10000] [--repeats 2] \\
        [--seed 0] [--threads 1] [--also-covariance] [--large-iterations 10000]

writes ``benchmarks/results/forms_speed.md`` and ``.json``.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from qubo_round.pipeline import QuantConfig, quantize_model
from qubo_round.relaxations.adaround import AdaRoundParams
from qubo_round.zoo import load_model

log = logging.getLogger("forms_speed")
RESULTS = Path(__file__).parent / "results"


def layer_positions(model, x1) -> dict[str, int]:
    """Output positions per sample of every Conv/Linear layer (1 for a Linear on flat inputs):
    the data form's mini-batch has ``batch_size * positions`` columns."""
    out, hooks = {}, []
    for name, m in model.named_modules():
        if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear)):
            hooks.append(m.register_forward_hook(
                lambda mod, i, o, name=name: out.__setitem__(name, int(o[0].numel() // o.shape[1]) if o.ndim > 2 else 1)))
    try:
        with torch.no_grad():
            model(x1)
    finally:
        for h in hooks:
            h.remove()
    return out


#: The runs compared: label -> (form, polish, solver spec; None: ``adaround`` at the ``iterations``
#: of the command line). ``auto`` and ``data`` are the relaxation alone (``polish=False``), the comparison
#: the issue asks for at equal iterations; ``+polish`` adds the pipeline's default single-flip
#: descent on each layer's QUBO; ``fast+polish`` is the preset ``adaround/fast`` (2k iterations,
#: lr 0.1) with the polish, and ``data-fast+polish`` the same for the data form: how much of the
#: time to a low loss comes from the form, and how much from the shorter schedule and the polish.
VARIANTS = {
    "auto": ("auto", False, None),
    "data": ("data", False, None),
    "auto+polish": ("auto", True, None),
    "data+polish": ("data", True, None),
    "fast+polish": ("auto", True, "adaround/fast"),
    "data-fast+polish": ("data", True, "adaround/fast"),
    "covariance": ("covariance", False, None),
}
FAST, DATA_FAST = "fast+polish", "data-fast+polish"


def one_run(model, calib, label, bits, iterations, seed, batch_size, evaluate=None):
    form, polish, spec = VARIANTS[label]
    cfg = QuantConfig(bits=bits, solver=spec or "adaround", solver_params={} if spec else {"iterations": iterations},
                      form=form, seed=seed, batch_size=batch_size, polish=polish)
    pos = layer_positions(model, calib[:1])
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    q, rep = quantize_model(model, calib, cfg, device="cpu", progress=False)
    wall = time.perf_counter() - t0
    layers = []
    for r in rep.layers:  # the report's own breakdown of each layer's time
        its = r.iterations or 0
        bc = batch_size * pos[r.name]
        layers.append(dict(name=r.name, shape=f"{r.rows}x{r.cols}" + (f" ({r.groups} groups)" if r.groups > 1 else ""),
                           form=r.form, layer_seconds=r.seconds, solve_seconds=r.solve_seconds,
                           polish_seconds=r.polish_seconds, capture_seconds=r.capture_seconds, iterations=its,
                           ms_per_iteration=1e3 * r.solve_seconds / its if its else None,
                           nearest_loss=r.nearest_loss, loss=r.loss,
                           batch_columns=bc, cov_mflop=2 * r.rows * r.cols**2 / 1e6,
                           data_mflop=4 * r.rows * r.cols * bc / 1e6))
    return dict(form=label, wall_seconds=wall, solve_seconds=sum(x["solve_seconds"] for x in layers),
                polish_seconds=sum(x["polish_seconds"] for x in layers),
                total_loss=rep.loss, total_nearest_loss=rep.nearest_loss,
                accuracy=evaluate(q)["accuracy"] if evaluate else None, layers=layers, load_before=load0,
                load_after=os.getloadavg()[0])


def first(runs, label) -> dict:
    """The first round's run of ``label``."""
    return next(r for r in runs if r["form"] == label)


def pair(runs, slow, fast, repeats) -> tuple[list[float], list[float], float]:
    """Per round ``slow / fast`` wall and solver time ratios, and the first round's total loss
    ratio ``fast / slow``."""
    by = {(r["round"], r["form"]): r for r in runs}
    ps = [(by[k, slow], by[k, fast]) for k in range(repeats)]
    return ([s["wall_seconds"] / f["wall_seconds"] for s, f in ps],
            [s["solve_seconds"] / f["solve_seconds"] for s, f in ps],
            ps[0][1]["total_loss"] / ps[0][0]["total_loss"])


def flop_ratio(run_auto, run_data) -> tuple[float, float]:
    """(data / auto) of the matrix-product flops per iteration summed over the layers, each layer
    at the form each run used; and the same if auto used the data form wherever it is cheaper."""
    f = lambda L: L["cov_mflop"] if L["form"] == "covariance" else L["data_mflop"]  # noqa: E731
    data = sum(f(L) for L in run_data["layers"])
    auto = sum(f(L) for L in run_auto["layers"])
    best = sum(min(L["cov_mflop"], L["data_mflop"]) for L in run_auto["layers"])
    return data / auto, data / best


def to_markdown(meta, runs, summary, large=None) -> str:
    forms = meta["forms"]
    f0 = {f: first(runs, f) for f in forms}
    med = lambda f, k: statistics.median(r[k] for r in runs if r["form"] == f)  # noqa: E731
    fr, fr_best = flop_ratio(f0["auto"], f0["data"])
    weights = lambda L: L["data_mflop"] / (4 * L["batch_columns"])  # noqa: E731  (rows cols / 1e6)
    lay = f0["auto"]["layers"]
    costly = [L for L in lay if L["cov_mflop"] > L["data_mflop"]]
    lose = ", ".join(f"{L['name']} ({L['shape']}, {L['batch_columns']} columns per batch)" for L in costly) or "no layer"
    share = sum(weights(L) for L in costly) / sum(weights(L) for L in lay)
    lines = [f"# Covariance (auto) form against the forced data form: digits CNN, {meta['bits']} bits", "",
             f"`python benchmarks/forms_speed.py {meta['argv']}`", "",
             f"AdaRound, {meta['iterations']} iterations per layer (both forms stop early only when every h is "
             f"clipped and frozen), data form batch {meta['batch_size']} samples, {meta['samples']} calibration "
             f"images (seed 0), seed {meta['seed']}, per-channel symmetric MSE grid; {meta['repeats']} rounds, order "
             f"alternated; times are medians over rounds. Machine: {meta['machine']}, {meta['cpus']} CPU cores "
             f"(load average {meta['load_start']:.1f} at start, {meta['load_end']:.1f} at end, per-run values in the "
             f"JSON), torch {meta['torch']} on {meta['threads']} thread(s). Both forms share the relaxation's "
             "step code (`relaxations/active.py`: compaction of frozen entries, subnormals flushed), and both run "
             "the 4 groups of conv3 as one batched problem (stacked per-row H; batched mini-batch products).", "",
             "## Whole model", "",
             "polish ms: time in the polish, all layers (`-`: not polished).", "",
             "| form | wall s | solver s | polish ms | total loss | total nearest loss | accuracy |",
             "|---|---|---|---|---|---|---|"]
    for f in forms:
        pol = f"{1e3 * med(f, 'polish_seconds'):.0f}" if VARIANTS[f][1] else "-"
        lines.append(f"| {f} | {med(f, 'wall_seconds'):.1f} | {med(f, 'solve_seconds'):.1f} | {pol} | "
                     f"{f0[f]['total_loss']:.4g} | {f0[f]['total_nearest_loss']:.4g} | {100 * f0[f]['accuracy']:.2f}% |")
    lines += ["", f"Ratio data / auto: wall time **{summary['wall_ratio']:.2f}x** (per round: "
              f"{', '.join(f'{x:.2f}' for x in summary['wall_ratios'])}), solver time **{summary['solve_ratio']:.2f}x**; "
              f"total loss auto / data {summary['loss_ratio']:.3f}.", ""]
    q = summary.get("polished")
    if q:
        lines += [f"With the pipeline's default polish on both (`{q['fast']}` against `{q['slow']}`: the same "
                  f"iterations, then single flips on each layer's QUBO to a 1-flip local minimum): wall time "
                  f"**{q['wall_ratio']:.2f}x**, total loss {q['loss_ratio']:.3f}.", ""]
    lines += [f"Matrix-product flops per iteration, summed over the layers: data / auto = **{fr:.2f}x** (with auto's "
              f"choice of form); {fr_best:.1f}x had auto taken the data form wherever its products are cheaper. "
              "The covariance form costs `2 rows cols^2` per step, the data form `4 rows cols batch_columns`: the "
              "covariance form wins where a mini-batch has many more columns than the layer has inputs, and loses "
              f"on {lose}: {share:.0%} of the model's weights, so also of the element-wise work both forms do per "
              "step.", ""]
    b = summary.get("bound")
    if b:
        lines += ["What bounds the ratio: " + b["text"], ""]
    pf = summary.get("product_floor")
    if pf:
        lines += ["A floor for any implementation: " + pf["text"], ""]
    met = lambda x: x["wall_ratio"] >= 5 and x["loss_ratio"] <= 1  # noqa: E731
    lines += ["Target of the project: at least 5x less wall time on the whole digits model at equal or better loss.", "",
              f"- At equal iterations (the protocol of the issue), `auto` against `data`: **{summary['wall_ratio']:.2f}x** "
              f"at {summary['loss_ratio']:.3f} of its loss: **{'met' if met(summary) else 'not met'}**"
              + (f"; polished, **{q['wall_ratio']:.2f}x** at {q['loss_ratio']:.3f}" if q else "")
              + ". The digits layers are too small for the mini-batches to dominate (the bound above); on the "
              "larger layers below the covariance form is the faster one by far."]
    x = summary.get("short")
    if x:
        lines.append(f"- Both forms on the same short schedule (2k iterations at lr 0.1, then the polish), `{x['fast']}` "
                     f"against `{x['slow']}`: **{x['wall_ratio']:.2f}x** (per round: "
                     f"{', '.join(f'{v:.2f}' for v in x['wall_ratios'])}) at {x['loss_ratio']:.3f} of its loss: "
                     f"**{'met' if met(x) else 'not met'}**.")
    x = summary.get("published")
    if x:
        lines.append(f"- `{x['fast']}` against `{x['slow']}`, the data form as published (10k iterations, its own "
                     f"rounding): **{x['wall_ratio']:.2f}x** (per round: "
                     f"{', '.join(f'{v:.2f}' for v in x['wall_ratios'])}) at {x['loss_ratio']:.3f} of its loss. "
                     "This is what the pipeline's `adaround/fast` preset with its default polish gains over the "
                     "published recipe, but most of it comes from the shorter schedule and the polish, which the data "
                     "form can use too (previous line): it is not a gain of the covariance form.")
    lines.append("")
    lines += ["## Per layer (first round's losses; median times)", "",
              "ms/iter: solver time per iteration of the layer's schedule (all its groups); Mflop: matrix products "
              "per iteration in the covariance / data form.", "",
              "| layer | shape | batch columns | Mflop cov / data | "
              + " | ".join(f"{f}: form, loss, layer s, solver s, ms/iter" for f in forms) + " |",
              "|---|---|---|---|" + "---|" * len(forms)]
    for i, L in enumerate(f0[forms[0]]["layers"]):
        cells = []
        for f in forms:
            x = f0[f]["layers"][i]
            ls = statistics.median(r["layers"][i]["layer_seconds"] for r in runs if r["form"] == f)
            ss = statistics.median(r["layers"][i]["solve_seconds"] for r in runs if r["form"] == f)
            ms = [r["layers"][i]["ms_per_iteration"] for r in runs if r["form"] == f]
            ms = "-" if None in ms else f"{statistics.median(ms):.3f}"  # greedy: no iterations
            cells.append(f"{x['form']}, {x['loss']:.4g}, {ls:.1f}, {ss:.1f}, {ms}")
        lines.append(f"| {L['name']} | {L['shape']} | {L['batch_columns']} | {L['cov_mflop']:.2f} / "
                     f"{L['data_mflop']:.1f} | " + " | ".join(cells) + " |")
    if large:
        lines += ["", "## Two layers with larger mini-batches", "", large["text"], "",
                  "| form | wall s | solver s | total loss | total nearest loss |", "|---|---|---|---|---|"]
        for r in large["runs"]:
            lines.append(f"| {r['form']} | {r['wall_seconds']:.1f} | {r['solve_seconds']:.1f} | {r['total_loss']:.4g} | "
                         f"{r['total_nearest_loss']:.4g} |")
        lines += ["", "| layer | shape | batch columns | Mflop cov / data | auto: form, loss, solver s, ms/iter | "
                  "data: form, loss, solver s, ms/iter |", "|---|---|---|---|---|---|"]
        ra, rd = large["runs"]
        for La, Ld in zip(ra["layers"], rd["layers"]):
            lines.append(f"| {La['name']} | {La['shape']} | {La['batch_columns']} | {La['cov_mflop']:.1f} / "
                         f"{La['data_mflop']:.0f} | {La['form']}, {La['loss']:.4g}, {La['solve_seconds']:.1f}, "
                         f"{La['ms_per_iteration']:.3f} | {Ld['form']}, {Ld['loss']:.4g}, {Ld['solve_seconds']:.1f}, "
                         f"{Ld['ms_per_iteration']:.3f} |")
    return "\n".join(lines) + "\n"


def bound(runs) -> dict:
    """Amdahl's bound on the data / auto ratio: the layers where auto's form is not much cheaper
    per iteration than the data form take about the same time in both runs, whatever the other
    layers cost."""
    med = lambda f, i, k: statistics.median(r["layers"][i][k] for r in runs if r["form"] == f)  # noqa: E731
    auto = next(r for r in runs if r["form"] == "auto")
    slow = [i for i, L in enumerate(auto["layers"])
            if med("auto", i, "ms_per_iteration") >= 0.5 * med("data", i, "ms_per_iteration")]
    if not slow:
        return {}
    t_slow = sum(med("auto", i, "solve_seconds") for i in slow)
    t_auto = statistics.median(r["solve_seconds"] for r in runs if r["form"] == "auto")
    t_data = statistics.median(r["solve_seconds"] for r in runs if r["form"] == "data")
    names = ", ".join(auto["layers"][i]["name"] for i in slow)
    per_it = "; ".join(f"{auto['layers'][i]['name']}: {med('auto', i, 'ms_per_iteration'):.3f} ms (auto, "
                       f"{auto['layers'][i]['form']}) vs {med('data', i, 'ms_per_iteration'):.3f} ms (data)" for i in slow)
    floor = min(med("auto", i, "ms_per_iteration") for i in range(len(auto["layers"])))
    one = len(slow) == 1
    text = (f"{names} cost{'s' if one else ''} more than half as much per iteration in auto's form as in the data "
            f"form ({per_it}) and take{'s' if one else ''} {t_slow:.1f} s of auto's {t_auto:.1f} s of solver "
            f"time ({100 * t_slow / t_auto:.0f}%): even if every other layer cost nothing, the solver-time ratio could "
            f"not exceed {t_data:.1f} / {t_slow:.1f} = {t_data / t_slow:.1f}x. Below that, every iteration of every "
            f"problem pays a fixed cost of the ~25 small tensor operations both forms share (the cheapest problem "
            f"here: {floor:.3f} ms per iteration).")
    return dict(layers=names, auto_seconds=t_slow, max_ratio=t_data / t_slow, text=text)


def _fastest(fn, calls: int, rounds: int) -> float:
    """Seconds per call of ``fn``: the fastest of ``rounds`` rounds of ``calls`` calls (after a warm-up)."""
    for _ in range(max(1, calls // 10)):
        fn()
    best = math.inf
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t) / calls)
    return best


def product_floor(runs, calls: int = 1000, rounds: int = 5) -> dict:
    """Floors under both runs' wall times: each run's time outside the solver (median, as
    measured) plus, per layer, the bare matrix products of one step of the form the run used
    (covariance: ``(rows, cols) @ (cols, cols)``; data: ``(rows, cols) @ (cols, batch columns)``
    and back), float32 into preallocated outputs, fastest of ``rounds`` x ``calls`` on this
    machine, times the layer's iterations. ``auto``'s floor bounds the ratio against the data form
    as it runs; the ratio of the two floors is where it tends if the element-wise work of both
    forms became free."""
    med = lambda f, k: statistics.median(r[k] for r in runs if r["form"] == f)  # noqa: E731
    g = torch.Generator().manual_seed(0)
    per_layer = []
    for La, Ld in zip(first(runs, "auto")["layers"], first(runs, "data")["layers"]):
        rows, cols = (int(v) for v in La["shape"].split()[0].split("x"))
        a, H = torch.randn(rows, cols, generator=g), torch.randn(cols, cols, generator=g)
        X = torch.randn(cols, La["batch_columns"], generator=g)
        o_cov, o_out, o_grad = torch.empty(rows, cols), torch.empty(rows, X.shape[1]), torch.empty(rows, cols)
        sec = {"covariance": _fastest(lambda: torch.mm(a, H, out=o_cov), calls, rounds),
               "data": _fastest(lambda: torch.mm(torch.mm(a, X, out=o_out), X.T, out=o_grad), calls, rounds)}
        per_layer.append(dict(name=La["name"], cov_ms=1e3 * sec["covariance"], data_ms=1e3 * sec["data"],
                              auto_seconds=sec[La["form"]] * La["iterations"], auto_form=La["form"],
                              data_seconds=sec[Ld["form"]] * Ld["iterations"]))
    out = {f: med(f, "wall_seconds") - med(f, "solve_seconds") for f in ("auto", "data")}
    floor = {f: out[f] + sum(x[f"{f}_seconds"] for x in per_layer) for f in ("auto", "data")}
    data_wall = med("data", "wall_seconds")
    products = ", ".join(f"{x['name']} {x['cov_ms']:.3f} / {x['data_ms']:.3f}" for x in per_layer)
    text = (f"the bare matrix products of one step (ms, covariance / data form: {products}; float32, preallocated "
            f"outputs, fastest of {rounds} x {calls} calls) take {floor['auto'] - out['auto']:.2f} s over auto's "
            f"iterations in its forms and {floor['data'] - out['data']:.2f} s over the data form's. With the time "
            f"each run spends outside the solver (auto {out['auto']:.1f} s, data {out['data']:.1f} s: capture, "
            f"construction), auto's wall time cannot go below {floor['auto']:.1f} s however cheap the element-wise "
            f"work of a step became: against the data form as it runs here ({data_wall:.1f} s) the ratio could not "
            f"pass **{data_wall / floor['auto']:.1f}x**. Were the element-wise work free in both forms, the ratio "
            f"would tend to {floor['data']:.1f} / {floor['auto']:.1f} = **{floor['data'] / floor['auto']:.1f}x**.")
    return dict(layers=per_layer, outside_seconds=out, floor_seconds=floor,
                max_wall_ratio=data_wall / floor["auto"], floor_ratio=floor["data"] / floor["auto"], text=text)


def large_layers(args) -> dict:
    """Two 3x3 convolutions (16 -> 32 -> 32 channels) on 16 x 16 random inputs, random weights:
    32 images per mini-batch are 8192 columns (digits: 2048 at most; ResNet's first stage on
    ImageNet: 100k)."""
    g = torch.Generator().manual_seed(args.seed)
    model = torch.nn.Sequential(torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(32, 32, 3, padding=1)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    calib = torch.randn(256, 16, 16, 16, generator=g).relu()
    runs = [one_run(model, calib, f, args.bits, args.large_iterations, args.seed, args.batch_size)
            for f in ("auto", "data")]
    for r in runs:
        log.info("large layers %-5s wall %.1fs solver %.1fs loss %.4g", r["form"], r["wall_seconds"], r["solve_seconds"],
                 r["total_loss"])
    a, d = runs
    text = (f"{large_layers.__doc__.split(':')[0].strip()} (`large_layers` in the script): 256 calibration "
            f"images, {args.large_iterations} "
            f"iterations per layer in both forms, same machine and settings. Ratio data / auto: wall time "
            f"**{d['wall_seconds'] / a['wall_seconds']:.1f}x**, solver time **{d['solve_seconds'] / a['solve_seconds']:.1f}x**"
            f"; total loss auto / data {a['total_loss'] / d['total_loss']:.3f}.")
    return dict(runs=runs, text=text, wall_ratio=d["wall_seconds"] / a["wall_seconds"],
                solve_ratio=d["solve_seconds"] / a["solve_seconds"])


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
    ap.add_argument("--large-iterations", type=int, default=10000,
                    help="iterations for the two larger convolutions (0: skip that part)")
    ap.add_argument("--out", type=Path, default=RESULTS / "forms_speed.md")
    ap.add_argument("--render", type=Path, help="only rewrite the markdown of an earlier run from its JSON")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.render:
        d = json.loads(args.render.read_text())
        d["summary"]["bound"] = bound(d["runs"])
        args.render.with_suffix(".md").write_text(to_markdown(d["meta"], d["runs"], d["summary"], d.get("large")))
        args.render.write_text(json.dumps(d, indent=1))
        return
    logging.getLogger("qubo_round").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    import sys
    forms = ["auto", "data"] + (["covariance"] if args.also_covariance else [])
    if args.iterations == AdaRoundParams().iterations:  # fast+polish is set against the default 10k
        forms += ["auto+polish", "data+polish", FAST, DATA_FAST]
    meta = dict(argv=" ".join(sys.argv[1:] if argv is None else argv), bits=args.bits, samples=args.samples,
                iterations=args.iterations, batch_size=args.batch_size, repeats=args.repeats, seed=args.seed,
                threads=args.threads, forms=forms, machine=platform.machine(), cpus=os.cpu_count(),
                torch=torch.__version__, load_start=os.getloadavg()[0])
    bundle = load_model("digits")
    calib = bundle.calibration(args.samples, 0)
    runs = []
    for k in range(args.repeats):
        for f in (forms if k % 2 == 0 else forms[::-1]):
            r = one_run(bundle.model, calib, f, args.bits, args.iterations, args.seed, args.batch_size,
                        bundle.evaluate)
            r["round"] = k
            runs.append(r)
            log.info("round %d %-10s wall %.1fs solver %.1fs loss %.4g accuracy %.2f%% (load %.1f)", k, f,
                     r["wall_seconds"], r["solve_seconds"], r["total_loss"], 100 * r["accuracy"], r["load_after"])
    large = large_layers(args) if args.large_iterations > 0 else None
    meta["load_end"] = os.getloadavg()[0]
    wall, solve, loss = pair(runs, "data", "auto", args.repeats)
    summary = dict(wall_ratio=statistics.median(wall), wall_ratios=wall, solve_ratio=statistics.median(solve),
                   solve_ratios=solve, loss_ratio=loss, auto_loss=first(runs, "auto")["total_loss"],
                   data_loss=first(runs, "data")["total_loss"],
                   flop_ratio=flop_ratio(first(runs, "auto"), first(runs, "data"))[0])
    for key, slow, fast in (("polished", "data+polish", "auto+polish"), ("short", DATA_FAST, FAST),
                            ("published", "data", FAST)):
        if slow in forms and fast in forms:
            w, _, lr = pair(runs, slow, fast, args.repeats)
            summary[key] = dict(slow=slow, fast=fast, wall_ratio=statistics.median(w), wall_ratios=w, loss_ratio=lr)
    summary["bound"] = bound(runs)
    summary["product_floor"] = product_floor(runs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(to_markdown(meta, runs, summary, large))
    args.out.with_suffix(".json").write_text(json.dumps(dict(meta=meta, summary=summary, runs=runs, large=large),
                                                        indent=1))
    log.info("wrote %s: data/auto wall %.2fx, solver %.2fx, loss auto/data %.3f", args.out, summary["wall_ratio"],
             summary["solve_ratio"], summary["loss_ratio"])
    for key in ("polished", "short", "published"):
        if key in summary:
            x = summary[key]
            log.info("%s / %s: wall %.2fx, loss %.3f", x["slow"], x["fast"], x["wall_ratio"], x["loss_ratio"])


if __name__ == "__main__":
    main()
