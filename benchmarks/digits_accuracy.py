"""Test accuracy of the whole-network pipeline on the embedded digits CNN: float, nearest, GPTQ and
AdaRound (seeds), per-channel symmetric weights (MSE grid), 2 to 4 bits.

Every quantized model goes through :func:`qubo_round.pipeline.quantize_model` (asymmetric
reconstruction, layer by layer) with ``calibration`` images of the training split; accuracy is on
the 540-image test split. For every run the script also records the wall time and the per-layer
rows of the report (form, nearest loss, loss: the asymmetric reconstruction loss on all
calibration data), so quality can be judged without the test set::

    python benchmarks/digits_accuracy.py [--bits 2 3 4] [--seeds 0 1 2] [--samples 1024] \\
        [--iterations 10000] [--form auto] [--param KEY=VALUE ...] [--tag NAME]

writes ``benchmarks/results/digits_accuracy{_TAG}.md`` and ``.json``.

Noise: one test image is 0.185 points. AdaRound and GPTQ are compared on the same test images;
the noise of their accuracy difference is the paired standard error ``sqrt(d) / n`` with ``d``
the number of test images on which exactly one of the two is right; "below GPTQ by more than
noise" means a mean difference below ``-2`` such standard errors.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from qubo_round.pipeline import QuantConfig, quantize_model
from qubo_round.zoo import load_model

log = logging.getLogger("digits_accuracy")

RESULTS = Path(__file__).parent / "results"
#: The goals of the benchmark: AdaRound within this many points of float, per bit width.
GOALS = {2: 1.5, 3: 0.5, 4: 0.5}


def _predictions(model, x) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(b).argmax(-1) for b in torch.split(x, 512)])


def _parse(kv: list[str]) -> dict:
    out = {}
    for item in kv:
        k, _, v = item.partition("=")
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def run(bits_list, seeds, samples, calib_seed, iterations, form, params, solvers=("nearest", "gptq", "adaround"),
        polish=True):
    bundle = load_model("digits")
    calib = bundle.calibration(samples, calib_seed)
    x_test, y_test = bundle.evaluation()
    float_pred = _predictions(bundle.model, x_test)
    records = [dict(method="float", bits=32, seed=None, accuracy=float((float_pred == y_test).float().mean()),
                    seconds=0.0, total_loss=0.0, total_nearest_loss=0.0, layers=[], correct=(float_pred == y_test).tolist())]
    for bits in bits_list:
        for solver in solvers:
            for seed in (seeds if solver == "adaround" else [0]):
                sp = dict(params) if solver == "adaround" else {}
                if solver == "adaround":
                    sp.setdefault("iterations", iterations)
                cfg = QuantConfig(bits=bits, solver=solver, solver_params=sp, form=form if solver == "adaround" else "auto",
                                  seed=seed, polish=polish)
                load0 = os.getloadavg()[0]
                t0 = time.perf_counter()
                q, rep = quantize_model(bundle.model, calib, cfg, device="cpu", progress=False)
                sec = time.perf_counter() - t0
                pred = _predictions(q, x_test)
                rec = dict(method=solver, bits=bits, seed=seed if solver == "adaround" else None,
                           accuracy=float((pred == y_test).float().mean()), seconds=sec,
                           load_before=load0, load_after=os.getloadavg()[0],
                           total_loss=rep.loss,
                           total_nearest_loss=rep.nearest_loss,
                           layers=[dict(name=r.name, form=r.form, nearest_loss=r.nearest_loss, loss=r.loss,
                                        changed_fraction=r.changed_fraction, seconds=r.seconds) for r in rep.layers],
                           solver_params=sp, form=cfg.form, correct=(pred == y_test).tolist())
                records.append(rec)
                log.info("%d-bit %-9s seed %s: accuracy %.2f%%, total loss %.4g, %.1fs (load %.1f)", bits, solver,
                         rec["seed"], 100 * rec["accuracy"], rec["total_loss"], sec, rec["load_after"])
    return records


def summarise(records) -> list[dict]:
    """One row per bit width: float, nearest, gptq, adaround mean/std and the goal checks."""
    fl = next(r for r in records if r["method"] == "float")
    out = []
    for bits in sorted({r["bits"] for r in records if r["method"] != "float"}):
        by = {m: [r for r in records if r["bits"] == bits and r["method"] == m] for m in ("nearest", "gptq", "adaround")}
        ada = by["adaround"]
        row = dict(bits=bits, float=fl["accuracy"])
        for m in ("nearest", "gptq"):
            if by[m]:
                row[m] = by[m][0]["accuracy"]
                row[f"{m}_seconds"] = by[m][0]["seconds"]
                row[f"{m}_loss"] = by[m][0]["total_loss"]
        if ada:
            accs = [r["accuracy"] for r in ada]
            row.update(adaround_mean=statistics.mean(accs), adaround_std=statistics.stdev(accs) if len(accs) > 1 else 0.0,
                       adaround_runs=accs, adaround_seeds=[r["seed"] for r in ada],
                       adaround_seconds=statistics.mean(r["seconds"] for r in ada),
                       adaround_loss=statistics.mean(r["total_loss"] for r in ada),
                       adaround_loss_std=statistics.stdev([r["total_loss"] for r in ada]) if len(ada) > 1 else 0.0)
            gap = 100 * (fl["accuracy"] - row["adaround_mean"])
            row["gap_to_float"] = gap
            row["goal_float"] = gap <= GOALS.get(bits, 0.5) + 1e-9
            if by["gptq"]:
                g = by["gptq"][0]["correct"]
                n = len(g)
                ses = []
                for r in ada:
                    d = sum(a != b for a, b in zip(r["correct"], g))
                    ses.append(100 * max(d, 1) ** 0.5 / n)
                diff = 100 * (row["adaround_mean"] - row["gptq"])
                row["vs_gptq"] = diff
                row["vs_gptq_noise"] = 2 * statistics.mean(ses)
                row["goal_gptq"] = diff >= -row["vs_gptq_noise"]
        out.append(row)
    return out


def to_markdown(records, summary, meta) -> str:
    pct = lambda v: f"{100 * v:.2f}"  # noqa: E731
    lines = ["# Digits CNN: test accuracy through the pipeline", "",
             f"`python benchmarks/digits_accuracy.py {meta['argv']}`".replace(" `", "`"), "",
             f"Per-channel symmetric weights (MSE grid), {meta['samples']} calibration images of the training "
             f"split (seed {meta['calib_seed']}), 540 test images (one image = 0.185 points). AdaRound: "
             f"form `{meta['form']}`, params {meta['params'] or 'default'} (10k iterations unless given), "
             f"seeds {meta['seeds']} (the seed only changes the data form's mini-batches: a layer in the "
             "covariance form is deterministic); GPTQ and nearest are deterministic. "
             + ("GPTQ's and AdaRound's roundings are polished (the pipeline's default: single flips on each layer's "
                "QUBO to a 1-flip local minimum; nearest never is)." if meta.get("polish", False) else
                "No polish (`--no-polish`, or a run before the polish existed): each solver's own rounding."), "",
             f"Machine: {meta['machine']}, {meta['cpus']} CPU cores (load average {meta['load_start']:.1f} at start, "
             f"{meta['load_end']:.1f} at end; above 1, other jobs shared the cores); torch "
             f"{meta['torch']}, torch on {meta['threads']} thread(s) (solvers: one each). Wall times are per run, whole pipeline, and "
             "inflated by the load.", "",
             "| bits | float | nearest | gptq | adaround mean ± std (runs) | float − adaround | adaround − gptq (noise) | goals |",
             "|---|---|---|---|---|---|---|---|"]
    for r in summary:
        runs = ", ".join(pct(a) for a in r.get("adaround_runs", []))
        goals = []
        if "goal_float" in r:
            goals.append(f"float ≤{GOALS.get(r['bits'], 0.5)}: {'met' if r['goal_float'] else 'MISSED'}")
        if "goal_gptq" in r:
            goals.append(f"≥ gptq: {'met' if r['goal_gptq'] else 'MISSED'}")
        lines.append(f"| {r['bits']} | {pct(r['float'])} | {pct(r.get('nearest', float('nan')))} | "
                     f"{pct(r.get('gptq', float('nan')))} | {pct(r.get('adaround_mean', float('nan')))} ± "
                     f"{pct(r.get('adaround_std', float('nan')))} ({runs}) | {r.get('gap_to_float', float('nan')):+.2f} | "
                     f"{r.get('vs_gptq', float('nan')):+.2f} (±{r.get('vs_gptq_noise', float('nan')):.2f}) | "
                     f"{'; '.join(goals)} |")
    ada = [r for r in records if r["method"] == "adaround"]
    if ada and all(x["form"] == "covariance" for r in ada for x in r["layers"]):
        lines += ["", "Every AdaRound layer ran in the covariance form (the exact objective, full batch), which "
                  "is deterministic: the seeds give identical models (std 0). The data form's spread over seeds "
                  "is measured by `--form data --tag data_form` (`digits_accuracy_data_form.md`)."]
    lines += ["", "## Reconstruction loss (sum over layers, calibration data) and wall time", "",
              "| bits | nearest loss | gptq loss | adaround loss mean ± std | nearest s | gptq s | adaround s (mean) |",
              "|---|---|---|---|---|---|---|"]
    for r in summary:
        lines.append(f"| {r['bits']} | {r.get('nearest_loss', float('nan')):.4g} | {r.get('gptq_loss', float('nan')):.4g} | "
                     f"{r.get('adaround_loss', float('nan')):.4g} ± {r.get('adaround_loss_std', float('nan')):.2g} | "
                     f"{r.get('nearest_seconds', float('nan')):.1f} | {r.get('gptq_seconds', float('nan')):.1f} | "
                     f"{r.get('adaround_seconds', float('nan')):.1f} |")
    lines += ["", "## Every run, per layer: form, loss (nearest loss in the same run), seconds", "",
              "| bits | method | seed | accuracy | total loss | s | load | conv1 | conv2 | conv3 | fc1 | fc2 |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        if r["method"] == "float":
            continue
        cells = [f"{x['form'][:3]} {x['loss']:.4g} ({x['nearest_loss']:.3g}) {x['seconds']:.1f}s" for x in r["layers"]]
        lines.append(f"| {r['bits']} | {r['method']} | {'' if r['seed'] is None else r['seed']} | {pct(r['accuracy'])} | "
                     f"{r['total_loss']:.4g} | {r['seconds']:.1f} | {r['load_after']:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--samples", type=int, default=1024)
    ap.add_argument("--calib-seed", type=int, default=0)
    ap.add_argument("--iterations", type=int, default=10000)
    ap.add_argument("--form", choices=["auto", "covariance", "data"], default="auto")
    ap.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="adaround parameter")
    ap.add_argument("--solvers", nargs="+", default=["nearest", "gptq", "adaround"])
    ap.add_argument("--no-polish", action="store_true", help="the solvers' own roundings (QuantConfig(polish=False))")
    ap.add_argument("--tag", default="", help="suffix of the output files")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads for the whole run (stats capture "
                    "included; the solvers use one thread each by default)")
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    ap.add_argument("--render", type=Path, help="only rewrite the markdown of an earlier run from its JSON")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.render:
        d = json.loads(args.render.read_text())
        args.render.with_suffix(".md").write_text(to_markdown(d["runs"], d["summary"], d["meta"]))
        return
    torch.set_num_threads(args.threads)
    import sys
    meta = dict(argv=" ".join(sys.argv[1:] if argv is None else argv).strip(), samples=args.samples, calib_seed=args.calib_seed,
                form=args.form, params=_parse(args.param), seeds=args.seeds, polish=not args.no_polish, machine=platform.machine(), threads=args.threads,
                cpus=os.cpu_count(), torch=torch.__version__, load_start=os.getloadavg()[0])
    t0 = time.perf_counter()
    records = run(args.bits, args.seeds, args.samples, args.calib_seed, args.iterations, args.form,
                  _parse(args.param), tuple(args.solvers), polish=not args.no_polish)
    meta.update(load_end=os.getloadavg()[0], seconds=time.perf_counter() - t0)
    summary = summarise(records)
    stem = "digits_accuracy" + (f"_{args.tag}" if args.tag else "")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{stem}.md").write_text(to_markdown(records, summary, meta))
    slim = [{k: v for k, v in r.items() if k != "correct"} for r in records]
    (args.out_dir / f"{stem}.json").write_text(json.dumps(dict(meta=meta, summary=summary, runs=slim), indent=1))
    log.info("wrote %s", args.out_dir / f"{stem}.md")


if __name__ == "__main__":
    main()
