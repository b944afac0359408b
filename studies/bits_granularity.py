"""Bit widths and granularity: 2/3/4-bit weights, one scale per tensor versus one per output
channel, on the digits CNN and on all-MiniLM-L6-v2.

The grid (eq. 22) is ``W_hat = s * clip(floor(W / s) + V, n, p)`` with ``s`` one scalar per layer
(``granularity="tensor"``) or one per output channel (``"channel"``), symmetric, MSE scale. A
per-tensor grid must cover the widest channel, so narrow channels get few levels; the question is
how much of that loss the rounding optimisation (GPTQ, AdaRound) recovers, and how it changes
with the bit width.

Digits: nearest (``nearest_model``: no calibration statistics, hence deterministic), ``gptq`` and
``adaround/fast`` (2k Adam steps, lr 0.1: on these layers as good as 10k steps, see
benchmarks/results/relaxations_digits.md) through ``quantize_model``; each seed draws its own
calibration images and seeds the pipeline, test accuracy on the 540 held-out images.

MiniLM: mean cosine similarity of the sentence embeddings to the float ones (512 held-out
sentences). Nearest for all six settings; AdaRound (covariance form, few iterations) for the
subset in :data:`MINILM_ADAROUND`, as the CPU budget allows (one AdaRound run costs minutes: the
statistics of 36 layers plus the solver). GPTQ on MiniLM is not recomputed here (~11 min per bit
width on this machine): ``benchmarks/results/minilm.md`` has per-channel 4/3-bit nearest, AdaRound
and GPTQ.
"""
from __future__ import annotations

import logging
import time

from .common import Lab, StudyContext, mean_std, pm, threads

log = logging.getLogger(__name__)

VERSION = 1
GRANULARITIES = ("tensor", "channel")
#: Digits methods (pipeline solver specs; ``nearest`` runs without statistics).
DIGITS_METHODS = ("nearest", "gptq", "adaround/fast")
DIGITS_SAMPLES = 1024
#: MiniLM: calibration sentences and AdaRound settings of the subset run here.
MINILM_SAMPLES = 128
MINILM_ITERATIONS = 200
MINILM_ADAROUND = ((4, "tensor"), (4, "channel"))


def _digits_cell(lab: Lab, method: str, bits: int, gran: str, seed: int, samples: int) -> dict:
    from qubo_round.pipeline import QuantConfig
    from qubo_round.pipeline.nearest import nearest_model

    b = lab.bundle("digits")
    cfg = QuantConfig(bits=bits, granularity=gran, solver=method, seed=seed, polish=False)
    t0 = time.perf_counter()
    if method == "nearest":
        q = nearest_model(b.model, b.calibration(1, seed), cfg)
        extra = {}
    else:
        q, rep = lab.quantize(b.calibration(samples, seed), cfg)
        extra = {"loss": rep.loss, "nearest_loss": rep.nearest_loss}
    return {"accuracy": lab.accuracy(q), "seconds": time.perf_counter() - t0, **extra}


def _minilm_cell(lab: Lab, method: str, bits: int, gran: str, seed: int, samples: int, iterations: int) -> dict:
    from qubo_round.pipeline import QuantConfig
    from qubo_round.pipeline.nearest import nearest_model

    b = lab.bundle("minilm")  # loads the model and embeds the evaluation sentences once per run
    calib = b.calibration(samples, seed)
    params = {"iterations": iterations, "lr": 0.1} if method == "adaround" else {}
    cfg = QuantConfig(bits=bits, granularity=gran, solver=method, solver_params=params, seed=seed,
                      polish=False)
    t0 = time.perf_counter()
    if method == "nearest":
        q = nearest_model(b.model, calib[0], cfg)
        extra = {}
    else:
        q, rep = lab.quantize(calib, cfg, "minilm")
        extra = {"loss": rep.loss, "nearest_loss": rep.nearest_loss}
    seconds = time.perf_counter() - t0
    return {**b.evaluate(q), "seconds": seconds, **extra}


def _plot(ctx: StudyContext, stem: str, caption: str, rows: list[dict], ylabel: str, ref: float | None) -> None:
    with ctx.figure(stem, caption, figsize=(7, 4.5)) as (fig, ax):
        for (method, gran) in dict.fromkeys((r["method"], r["granularity"]) for r in rows):
            pts = sorted((r["bits"], r["mean"], r["std"]) for r in rows
                         if r["method"] == method and r["granularity"] == gran)
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], capsize=3,
                        marker="o" if gran == "channel" else "s", ls="-" if gran == "channel" else "--",
                        label=f"{method}, per-{gran}")
        if ref is not None:
            ax.axhline(ref, color="grey", ls=":", label="float")
        ax.set_xticks([2, 3, 4])
        ax.set_xlabel("weight bits")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)


def digits_part(ctx: StudyContext) -> None:
    lab = ctx.lab
    bits_list = ctx.pick([2, 3, 4], [2])
    seeds = [ctx.seed + i for i in range(ctx.pick(3, 2))]
    methods = ctx.pick(DIGITS_METHODS, ("nearest", "gptq"))
    samples = ctx.pick(DIGITS_SAMPLES, 256)
    jobs = [(m, b, g, s) for m in methods for g in GRANULARITIES for b in bits_list
            for s in (seeds[:1] if m == "nearest" else seeds)]
    runs = []
    for m, b, g, s in ctx.bar(jobs, "digits"):
        key = {"study": "bits-granularity", "v": VERSION, "model": "digits", "method": m, "bits": b,
               "granularity": g, "seed": s, "samples": samples}
        runs.append({"model": "digits", "method": m, "bits": b, "granularity": g, "seed": s,
                     **ctx.cell(key, lambda: _digits_cell(lab, m, b, g, s, samples))})
    float_acc = ctx.cell({"study": "bits-granularity", "model": "digits", "method": "float"},
                         lambda: lab.accuracy(lab.bundle("digits").model))
    ctx.text(f"""
## Digits CNN (float test accuracy {100 * float_acc:.2f}%)

Symmetric MSE grid, all five layers quantized; {samples} calibration images per seed (seed s draws
its own images and seeds the pipeline), seeds {', '.join(map(str, seeds))}; test accuracy on 540
images (one image = 0.185 points), mean ± std over the seeds. `nearest` uses no calibration data,
so it is computed once (deterministic). `adaround/fast` = 2000 Adam steps per layer, lr 0.1,
covariance form.
""")
    table, agg = [], []
    for m in methods:
        for g in GRANULARITIES:
            row = {"method": m, "granularity": g}
            for b in bits_list:
                accs = [r["accuracy"] for r in runs if (r["method"], r["granularity"], r["bits"]) == (m, g, b)]
                row[f"{b}-bit acc (%)"] = (f"{100 * accs[0]:.2f} (deterministic)" if m == "nearest"
                                           else pm(accs, 100))
                mu, sd = mean_std([100 * a for a in accs])
                agg.append({"model": "digits", "method": m, "granularity": g, "bits": b, "mean": mu, "std": sd,
                            "runs": len(accs)})
            table.append(row)
    ctx.table(table, title="Digits: test accuracy")
    loss_rows = []
    for m in methods:
        if m == "nearest":
            continue
        for g in GRANULARITIES:
            row = {"method": m, "granularity": g}
            for b in bits_list:
                sel = [r for r in runs if (r["method"], r["granularity"], r["bits"]) == (m, g, b)]
                mu, sd = mean_std([r["loss"] for r in sel])
                row[f"{b}-bit loss"] = f"{mu:.4g} ± {sd:.2g}"
                row[f"{b}-bit s"] = mean_std([r["seconds"] for r in sel])[0]
            loss_rows.append(row)
    ctx.table(loss_rows, title="Digits: reconstruction loss summed over layers (asymmetric, calibration "
                               "data; mean ± std over seeds) and wall seconds per run")
    _plot(ctx, "digits_accuracy", "Digits CNN: test accuracy versus weight bits (mean ± std over seeds); "
          "solid = per-channel, dashed = per-tensor.", agg, "test accuracy (%)", 100 * float_acc)
    ctx.csv("digits_runs", runs)
    ctx.csv("digits_summary", agg)


def minilm_part(ctx: StudyContext) -> None:
    lab = ctx.lab
    if ctx.quick:
        ctx.text("## all-MiniLM-L6-v2\n\nSkipped in quick mode (loading the model and embedding its "
                 "evaluation sentences alone takes ~15-25 s).")
        return
    jobs = [("nearest", b, g) for g in GRANULARITIES for b in (2, 3, 4)]
    jobs += [("adaround", b, g) for b, g in MINILM_ADAROUND]
    runs = []
    for m, b, g in ctx.bar(jobs, "minilm"):
        samples = MINILM_SAMPLES
        iters = MINILM_ITERATIONS if m == "adaround" else None
        key = {"study": "bits-granularity", "v": VERSION, "model": "minilm", "method": m, "bits": b,
               "granularity": g, "seed": ctx.seed, "samples": samples, "iterations": iters}
        runs.append({"model": "minilm", "method": m, "bits": b, "granularity": g, "seed": ctx.seed,
                     "iterations": iters, **ctx.cell(key, lambda: _minilm_cell(lab, m, b, g, ctx.seed, samples, iters))})
    subset = ", ".join(f"{b}-bit per-{g}" for b, g in MINILM_ADAROUND)
    ctx.text(f"""
## all-MiniLM-L6-v2

All 36 Linear layers, symmetric MSE grid. Metric: mean cosine similarity of each of 512 held-out
sentence embeddings to its float embedding (1 = unchanged); nn top-1: fraction of sentences whose
nearest neighbour is unchanged. Nearest needs no data; AdaRound: covariance form,
{MINILM_ITERATIONS} Adam steps per layer at lr 0.1 (the `adaround/fast` learning rate),
{MINILM_SAMPLES} calibration sentences (seed {ctx.seed}), only for {subset}
(one run costs minutes on this CPU). One seed (a single run per cell: no std). Per-channel 4/3-bit
nearest, AdaRound (500 steps) and GPTQ from a separate benchmark: `benchmarks/results/minilm.md`
(GPTQ is not recomputed here: ~11 min per bit width).
""")
    ctx.table([{"method": r["method"], "granularity": r["granularity"], "bits": r["bits"],
                "mean cosine": r["mean_cosine"], "nn top-1": r["nn_top1"], "nn top-10 overlap": r["nn_top10_overlap"],
                "loss": r.get("loss"), "nearest loss": r.get("nearest_loss"), "seconds": r["seconds"]}
               for r in runs], title="MiniLM: agreement with the float embeddings")
    agg = [{"model": "minilm", "method": r["method"], "granularity": r["granularity"], "bits": r["bits"],
            "mean": r["mean_cosine"], "std": 0.0, "runs": 1} for r in runs]
    _plot(ctx, "minilm_cosine", "all-MiniLM-L6-v2: mean cosine similarity to the float embeddings versus "
          "weight bits (one seed); solid = per-channel, dashed = per-tensor.", agg, "mean cosine to float", 1.0)
    ctx.csv("minilm_runs", runs)


def run(ctx: StudyContext) -> None:
    with threads(1, blas=False):  # the digits layers are tiny: one thread is faster on 2 shared cores
        digits_part(ctx)
    with threads(2, blas=False):  # MiniLM's matrix products use both cores
        minilm_part(ctx)
