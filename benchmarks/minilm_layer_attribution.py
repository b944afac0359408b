"""all-MiniLM-L6-v2: which layers decide the held-out cosine, and is each layer's QUBO loss the
right proxy for it? Two methods quantize the whole network (layer-wise reconstruction, the same
grid); then, layer by layer:

* **alone**: the float network with only that layer quantized, by A and by B: the cosine each
  method's rounding of that layer costs on its own;
* **swap**: method A's network with that one layer taken from B: what B's rounding of the layer
  gives in A's context.

Beside each layer its reconstruction loss under A and B (the QUBO energy the solvers minimise, on
the calibration data). A layer where A has the lower loss and yet the lower "alone" cosine is one
where the layer loss does not predict the network's error. Metrics on the 512 held-out sentences
(``ModelBundle.evaluate``), mean +- standard error over sentences::

    python benchmarks/minilm_layer_attribution.py [--methods adaround gptq/in-order] [--bits 4] \\
        [--group-size 128] [--adaround-iterations 500] [--samples 256] [--seed 0] \\
        [--out benchmarks/results/minilm_layer_attribution]

writes ``OUT.json`` and ``OUT.md``.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from pathlib import Path

import torch

from qubo_round.bench.machine import machine_line
from qubo_round.pipeline import QuantConfig, quantize_model
from qubo_round.zoo import load_model

log = logging.getLogger("minilm_attribution")


def _config(method: str, bits: int, group: int, seed: int, iterations: int) -> QuantConfig:
    params = {"iterations": iterations, "lr": 0.1} if method.startswith("adaround") else {}
    return QuantConfig(bits=bits, group_size=group or None, solver=method, solver_params=params, seed=seed,
                       reconstruction="layerwise")


def _with_layers(model, qstate: dict, names) -> torch.nn.Module:
    m = copy.deepcopy(model)
    for name in names:
        qstate[name].apply(m.get_submodule(name))
    return m


def run(methods, bits: int, group: int, samples: int, seed: int, iterations: int, out: Path) -> dict:
    t_all = time.perf_counter()
    bundle = load_model("minilm")
    calib = bundle.calibration(samples, seed)
    runs = {}
    for m in methods:
        t = time.perf_counter()
        q, rep = quantize_model(bundle.model, calib, _config(m, bits, group, seed, iterations), progress=False)
        runs[m] = {"model": q, "qstate": rep.qstate, "loss": {r.name: r.loss for r in rep.layers},
                   "seconds": time.perf_counter() - t, "metrics": bundle.evaluate(q)}
        log.info("%s: %.1f s, cosine %.4f", m, runs[m]["seconds"], runs[m]["metrics"]["mean_cosine"])
    a, b = methods
    names = list(runs[a]["qstate"])
    rows = []
    for i, name in enumerate(names):
        row = {"layer": name}
        for m in methods:
            row[f"loss {m}"] = runs[m]["loss"][name]
            met = bundle.evaluate(_with_layers(bundle.model, runs[m]["qstate"], [name]))
            row[f"alone {m}"], row[f"alone {m} se"] = met["mean_cosine"], met["mean_cosine_se"]
        swapped = _with_layers(runs[a]["model"], runs[b]["qstate"], [name])
        met = bundle.evaluate(swapped)
        row["swap"] = met["mean_cosine"]  # a's network, this layer from b
        rows.append(row)
        log.info("%d/%d %s", i + 1, len(names), row)
    header = {"model": "all-MiniLM-L6-v2", "methods": list(methods), "bits": bits,
              "grid": f"per-channel symmetric, MSE scales{f', groups of {group}' if group else ''}",
              "reconstruction": "layerwise", "calibration_sentences": samples, "seed": seed,
              "adaround_iterations": iterations,
              "machine": machine_line(), "total_seconds": time.perf_counter() - t_all,
              "whole": {m: {"seconds": runs[m]["seconds"], **runs[m]["metrics"]} for m in methods}}
    return write(out, {"header": header, "rows": rows}, to_markdown)


def write(out: Path, result: dict, to_md) -> dict:
    """``OUT.json`` (the result) and ``OUT.md`` (``to_md(result)``); returns the result."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    out.with_suffix(".md").write_text(to_md(result))
    return result


def to_markdown(result: dict) -> str:
    h, rows = result["header"], result["rows"]
    a, b = h["methods"]
    lines = ["# all-MiniLM-L6-v2: per-layer attribution of the held-out cosine", ""]
    lines += [f"- {k.replace('_', ' ')}: {v}" for k, v in h.items() if k not in ("whole", "total_seconds")]
    lines += [f"- total: {h['total_seconds']:.0f} s", ""]
    lines += ["| whole network | mean cosine | seconds |", "|---|---|---|"]
    lines += [f"| {m} | {w['mean_cosine']:.4f} +- {w['mean_cosine_se']:.4f} | {w['seconds']:.1f} |"
              for m, w in h["whole"].items()]
    lines += ["", "Per layer: loss = the layer's reconstruction loss (QUBO energy, calibration data); alone = "
              "held-out cosine of the float network with only this layer quantized (standard errors "
              f"~{max(r[f'alone {a} se'] for r in rows):.0e}); swap = {a}'s network with this layer from {b}. "
              "`!` marks layers where the lower loss goes with the lower cosine alone.", "",
              f"| layer | loss {a} | loss {b} | alone {a} | alone {b} | swap | |",
              "|---|---|---|---|---|---|---|"]
    for r in rows:
        la, lb, ca, cb = r[f"loss {a}"], r[f"loss {b}"], r[f"alone {a}"], r[f"alone {b}"]
        flag = "!" if (la < lb) != (ca > cb) else ""
        lines.append(f"| {r['layer']} | {la:.4g} | {lb:.4g} | {ca:.5f} | {cb:.5f} | {r['swap']:.5f} | {flag} |")
    return "\n".join(lines) + "\n"


def cli(doc: str, run_fn, out: Path, methods_nargs, argv=None) -> int:
    """The command line shared by the MiniLM diagnostics: two (or more) methods, one grid, one
    calibration sample; calls ``run_fn(methods, bits, group, samples, seed, iterations, out)``."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--methods", nargs=methods_nargs, default=["adaround", "gptq/in-order"])
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=128, help="0: one scale per channel")
    ap.add_argument("--adaround-iterations", type=int, default=500)
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=out)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    run_fn(args.methods, args.bits, args.group_size, args.samples, args.seed, args.adaround_iterations, args.out)
    return 0


def main(argv=None) -> int:
    return cli(__doc__, run, Path("benchmarks/results/minilm_layer_attribution"), 2, argv)


if __name__ == "__main__":
    raise SystemExit(main())
