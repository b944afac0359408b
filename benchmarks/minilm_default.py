"""all-MiniLM-L6-v2: the default of ``qubo-round quantize --model minilm`` against our GPTQ presets
and round-to-nearest, on several grids and calibration seeds, compared sentence by sentence.

Methods (``quantize_model``, layer-wise reconstruction unless the model's defaults say otherwise):

* ``nearest``: round-to-nearest on the same grid.
* ``gptq/in-order``: the reference GPTQ's column loop, one factorisation per layer (our fastest GPTQ).
* ``gptq/reference``: the same with act-order (``desc_act``).
* ``gptq/in-order+attention``, ``gptq/reference+attention``: the two GPTQ presets given our
  value-projection lever too (``value_loss='attention'``), so that the solvers are compared on
  the same loss.
* any other ``SOLVER``, with ``+attention`` and/or ``+asymmetric`` (asymmetric reconstruction
  instead of layer-wise) and/or ``+output`` (``output_loss='gauss-newton'``: every Linear layer's
  rounding then descends on the K-FAC Gauss-Newton loss of the embedding, ``tr(G dW H dW^T)``,
  :mod:`qubo_round.kronecker`, its probe estimate of ``G`` shrunk toward its diagonal by its noise;
  ``+output-raw``: unshrunk, ``output_loss='gauss-newton-raw'``; ``+output@P``: with ``P`` probes
  per batch instead of 4): that registry spec (an ablation). ``default+output``: the
  default with that lever.
* ``default``: the MiniLM bundle's defaults (``ModelBundle.defaults``; ``chain/reference-adaround``:
  act-order GPTQ's rounding, 50 steps of AdaRound's relaxation from it, the polish; value
  projections on the attention-mixed loss). ``chain/gptq-adaround+attention`` is the same from
  in-order GPTQ (the default measured first).

Grids: ``BITS:SCALES:GROUP`` (SCALES ``mse`` or ``minmax``, the max-abs scale; GROUP 0 = per
channel), all symmetric per-channel, narrow range off. For every grid and seed: held-out mean
cosine, 10-NN overlap (512 sentences, mean +- standard error over sentences), wall seconds, and
the paired difference ``default - method`` per sentence (mean +- its standard error: both
embed the same sentences, so the paired error is the one that says whether they differ)::

    python benchmarks/minilm_default.py [--grids 4:mse:128 4:mse:0 3:mse:128 3:mse:0] [--seeds 0 1 2] \\
        [--methods nearest gptq/in-order gptq/reference gptq/in-order+attention gptq/reference+attention \\
        default] \\
        [--samples 256] [--out benchmarks/results/minilm_default]

Records go to ``OUT.jsonl`` one per run as they finish (a rerun skips the runs already there:
interrupt and resume), per-sentence values to ``OUT_sentences.npz``, the tables to ``OUT.md``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from qubo_round.bench.machine import machine_line
from qubo_round.pipeline import QuantConfig, quantize_model
from qubo_round.pipeline.nearest import nearest_model
from qubo_round.zoo import load_model


log = logging.getLogger("minilm_default")

METHODS = ("nearest", "gptq/in-order", "gptq/reference", "gptq/in-order+attention", "gptq/reference+attention",
           "chain/gptq-adaround+attention", "default")
PAIRED = ("cosine", "nn_top10_overlap")


def method_config(method: str, defaults: dict) -> dict:
    """The QuantConfig fields of ``method`` (grid and seed added by the caller)."""
    if method == "default":
        return dict(defaults)
    spec, *levers = method.split("+")
    output = {"output": "gauss-newton", "output-raw": "gauss-newton-raw"}
    outs, probes = [], {}
    for i, lv in enumerate(levers):  # +output@P: P probes per batch (default: QuantConfig's)
        name, _, p = lv.partition("@")
        if name in output:
            outs.append(output[name])
            if p:
                if not p.isdigit() or int(p) < 1:
                    raise ValueError(f"--methods: {method!r}: +{lv}: the probes after @ must be a positive integer")
                probes = {"output_probes": int(p)}
            levers[i] = name
    out = {"output_loss": outs[0], **probes} if outs else {}
    if spec == "default":
        if len(levers) != 1 or len(outs) != 1:
            raise ValueError(f"--methods: {method!r}: the default takes the lever +output or +output-raw only")
        return {**defaults, **out}
    if not set(levers) <= {"attention", "asymmetric", *output} or len(outs) > 1:
        raise ValueError(f"--methods: {method!r}: the levers are +attention, +asymmetric and one of +output, "
                         "+output-raw (each with @PROBES optionally)")
    from qubo_round.solvers import solver_class
    solver_class(spec)  # an unknown solver is refused by name
    return {"solver": spec, "reconstruction": "asymmetric" if "asymmetric" in levers else "layerwise",
            **({"value_loss": "attention"} if "attention" in levers else {}), **out}


def parse_grid(spec: str) -> tuple[int, str, int]:
    try:
        bits, scales, group = spec.split(":")
        out = int(bits), scales, int(group)
    except ValueError:
        raise SystemExit(f"--grids: {spec!r} is not BITS:SCALES:GROUP (e.g. 4:mse:128)") from None
    if scales not in ("mse", "minmax") or out[2] < 0:
        raise SystemExit(f"--grids: {spec!r}: SCALES must be mse or minmax and GROUP >= 0 (0: per channel)")
    return out


def run(grids, seeds, methods, samples: int, out: Path) -> list[dict]:
    from qubo_round.models import minilm
    for m in methods:
        method_config(m, {})  # names checked before the model loads
    out.parent.mkdir(parents=True, exist_ok=True)
    jl, npz = out.with_suffix(".jsonl"), out.with_name(out.name + "_sentences.npz")
    records = [json.loads(line) for line in jl.read_text().splitlines()] if jl.exists() else []
    sentences = dict(np.load(npz)) if npz.exists() else {}
    done = {(r["grid"], r["seed"], r["method"]) for r in records}
    bundle = load_model("minilm")
    ev = minilm.evaluation_batches()
    ref = minilm.embed(bundle.model, ev)
    for spec in grids:
        bits, scales, group = parse_grid(spec)
        for seed in seeds:
            calib = None
            for method in methods:
                if (spec, seed, method) in done:
                    continue
                calib = calib if calib is not None else bundle.calibration(samples, seed)
                cfg = QuantConfig(bits=bits, scale_method=scales, group_size=group or None, seed=seed,
                                  **method_config(method, bundle.defaults))
                t = time.perf_counter()
                if method == "nearest":
                    q, rep = nearest_model(bundle.model, calib[0], cfg), None
                else:
                    q, rep = quantize_model(bundle.model, calib, cfg, progress=False)
                seconds = time.perf_counter() - t
                per = minilm.per_sentence(ref, minilm.embed(q, ev))
                rec = {"grid": spec, "seed": seed, "method": method, "solver": cfg.solver,
                       "value_loss": cfg.value_loss, "output_loss": cfg.output_loss,
                       "output_probes": cfg.output_probes, "seconds": seconds,
                       "loss": None if rep is None else rep.loss, "loadavg": os.getloadavg()[0],
                       **{k: float(v.mean()) for k, v in per.items()},
                       **{f"{k}_se": minilm.standard_error(v) for k, v in per.items()}}
                records.append(rec)
                for k in PAIRED:
                    sentences[f"{spec}|{seed}|{method}|{k}"] = per[k]
                with jl.open("a") as f:
                    f.write(json.dumps(rec) + "\n")
                np.savez(npz, **sentences)
                log.info("%s seed %d %s: cosine %.5f, %.1f s", spec, seed, method, rec["cosine"], seconds)
                out.with_suffix(".md").write_text(to_markdown(records, sentences, samples))
    out.with_suffix(".md").write_text(to_markdown(records, sentences, samples))
    return records


def paired(sentences: dict, spec: str, seed: int, a: str, b: str, key: str) -> tuple[float, float] | None:
    """Mean and standard error of the per-sentence difference ``a - b``."""
    x, y = sentences.get(f"{spec}|{seed}|{a}|{key}"), sentences.get(f"{spec}|{seed}|{b}|{key}")
    if x is None or y is None:
        return None
    from qubo_round.models.minilm import standard_error
    d = np.asarray(x) - np.asarray(y)
    return float(d.mean()), standard_error(d)


def _pairs(ds) -> str:
    """Per-seed paired differences ``mean +- se`` joined by ``;`` (``-`` where one is missing)."""
    return "; ".join("-" if d is None else f"{d[0]:+.5f} +- {d[1]:.5f}" for d in ds)


def summary(records: list[dict], sentences: dict, grids: list[str]) -> list[str]:
    """One row per grid: the default against the best GPTQ preset without and with the value
    lever (best by mean cosine over the seeds), paired differences per seed, time ratios."""
    out = ["## Summary", "",
           "Mean cosine over the calibration seeds; `default - best`: per seed, the paired per-sentence "
           "difference against the best GPTQ configuration with the same value-projection lever "
           "(mean +- standard error over sentences); time: default / gptq/in-order and / gptq/reference, "
           "mean of the per-seed ratios.", "",
           "| grid | seeds | gptq (best preset) | gptq + attention (best) | default | default - best: cosine | "
           "default - best: 10-NN | time / in-order | time / reference |",
           "|---|---|---|---|---|---|---|---|---|"]
    for spec in grids:
        rows = [r for r in records if r["grid"] == spec]
        seeds = sorted({r["seed"] for r in rows if r["method"] == "default"})

        def mean(method, key="cosine"):
            v = [r[key] for r in rows if r["method"] == method and r["seed"] in seeds]
            return float(np.mean(v)) if len(v) == len(seeds) and seeds else None
        plain = [m for m in ("gptq/in-order", "gptq/reference") if mean(m) is not None]
        lever = [m for m in ("gptq/in-order+attention", "gptq/reference+attention") if mean(m) is not None]
        if not seeds or not plain or not lever:
            continue
        bp, bl = max(plain, key=mean), max(lever, key=mean)
        diffs = [[paired(sentences, spec, s, "default", bl, k) for s in seeds] for k in PAIRED]
        secs = {(r["seed"], r["method"]): r["seconds"] for r in rows}
        ratio = lambda m: (f"{np.mean([secs[(s, 'default')] / secs[(s, m)] for s in seeds]):.2f}"  # noqa: E731
                           if all((s, m) in secs for s in seeds) else "-")
        out.append(f"| {spec} | {len(seeds)} | {bp} {mean(bp):.5f} | {bl} {mean(bl):.5f} | {mean('default'):.5f} | "
                   f"{_pairs(diffs[0])} | {_pairs(diffs[1])} | {ratio('gptq/in-order')} | {ratio('gptq/reference')} |")
    return out + [""]


def output_summary(records: list[dict], sentences: dict, grids: list[str]) -> list[str]:
    """The output-loss lever (``+output``, ``+output@P``), where it was run: the default with it
    against the default, against the best GPTQ without it, against GPTQ with it and against the
    unshrunk estimate, paired per seed."""
    out = []
    for spec in grids:
        rows = [r for r in records if r["grid"] == spec]
        levers = sorted({r["method"] for r in rows if r["method"].startswith("default+output")
                         and not r["method"].startswith("default+output-raw")})
        secs = {(r["seed"], r["method"]): r["seconds"] for r in rows}
        present = {r["method"] for r in rows}
        for a in levers:
            others = ("default", "gptq/reference+attention", "gptq/reference+attention+output", "default+output-raw",
                      *(["default+output"] if a != "default+output" else []))
            seeds = sorted({r["seed"] for r in rows if r["method"] == a})
            mean = {m: np.mean([r["cosine"] for r in rows if r["method"] == m and r["seed"] in seeds])
                    for m in (a, *others) if m in present}
            ratio = [secs[(s, a)] / secs[(s, "gptq/in-order")] for s in seeds if (s, "gptq/in-order") in secs]
            for b in others:
                d = [paired(sentences, spec, s, a, b, k) for k in PAIRED for s in seeds]
                if any(x is None for x in d):
                    continue
                out.append(f"| {spec} | {len(seeds)} | {a} | {b} {mean[b]:.5f} | {mean[a]:.5f} | "
                           f"{_pairs(d[:len(seeds)])} | {_pairs(d[len(seeds):])} | "
                           f"{f'{np.mean(ratio):.2f}' if ratio else '-'} |")
    if not out:
        return []
    return ["## The output-loss lever", "",
            "`default+output`: the default with `output_loss='gauss-newton'` (every Linear layer's rounding "
            "then descends on the K-FAC Gauss-Newton loss of the embedding, its `G` estimate shrunk toward its "
            "diagonal by its noise; `+output-raw`: unshrunk; `@P`: P probes per batch, else 4). Paired "
            "per-sentence differences `method - x` per seed (mean +- standard error over sentences); time: "
            "method / gptq/in-order, mean over seeds.", "",
            "| grid | seeds | method | x (mean cosine) | method's mean cosine | cosine | 10-NN | time / in-order |",
            "|---|---|---|---|---|---|---|---|", *out, ""]


def to_markdown(records: list[dict], sentences: dict, samples: int) -> str:
    lines = ["# all-MiniLM-L6-v2: the default of `qubo-round quantize --model minilm` against our GPTQ", "",
             f"- calibration sentences: {samples} (calibration seed per row); evaluation: 512 held-out sentences",
             "- grid: per-channel symmetric, narrow range off; `minmax` = max-abs scales; g = group size",
             f"- machine: {machine_line()}; one run "
             "at a time, nothing else running (load average beside each run)",
             "- command: `python benchmarks/minilm_default.py` (see its docstring)", "",
             "Mean over sentences +- standard error over sentences; `default - x`: the paired per-sentence "
             "difference of the default and method x, mean +- its standard error.", ""]
    grids = list(dict.fromkeys(r["grid"] for r in records))
    lines += summary(records, sentences, grids)
    lines += output_summary(records, sentences, grids)
    for spec in grids:
        rows = [r for r in records if r["grid"] == spec]
        base = {(r["seed"]): r["seconds"] for r in rows if r["method"] == "gptq/in-order"}
        lines += [f"## {spec}", "",
                  "| seed | method | mean cosine | 10-NN overlap | seconds | / gptq/in-order | default - x: cosine "
                  "| default - x: 10-NN | load |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in sorted(rows, key=lambda r: (r["seed"], METHODS.index(r["method"]) if r["method"] in METHODS else 9)):
            ratio = f"{r['seconds'] / base[r['seed']]:.2f}" if r["seed"] in base else "-"
            diffs = []
            for k in PAIRED:
                d = paired(sentences, spec, r["seed"], "default", r["method"], k) if r["method"] != "default" else None
                diffs.append("-" if d is None else f"{d[0]:+.5f} +- {d[1]:.5f}")
            lines.append(f"| {r['seed']} | {r['method']} | {r['cosine']:.5f} +- {r['cosine_se']:.5f} | "
                         f"{r['nn_top10_overlap']:.4f} +- {r['nn_top10_overlap_se']:.4f} | {r['seconds']:.1f} | {ratio} | "
                         f"{diffs[0]} | {diffs[1]} | {r['loadavg']:.1f} |")
        seeds = sorted({r["seed"] for r in rows})
        if len(seeds) > 1:
            lines += ["", f"Over calibration seeds {seeds}: mean +- standard deviation of the per-seed means.", "",
                      "| method | mean cosine | 10-NN overlap | seconds |", "|---|---|---|---|"]
            for m in METHODS:
                rs = [r for r in rows if r["method"] == m]
                if len(rs) == len(seeds):
                    c, o, s = (np.array([r[k] for r in rs]) for k in ("cosine", "nn_top10_overlap", "seconds"))
                    lines.append(f"| {m} | {c.mean():.5f} +- {c.std(ddof=1):.5f} | {o.mean():.4f} +- "
                                 f"{o.std(ddof=1):.4f} | {s.mean():.1f} |")
        notes = sorted({r["note"] for r in rows if r.get("note")})
        if notes:
            lines += [""] + [f"Note on {', '.join(sorted({r['method'] for r in rows if r.get('note') == n}))}: {n}."
                             for n in notes]
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grids", nargs="+", default=["4:mse:128", "4:mse:0", "3:mse:128", "3:mse:0"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=[m for m in METHODS if m != "chain/gptq-adaround+attention"])
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/minilm_default"))
    args = ap.parse_args(argv)
    for g in args.grids:
        parse_grid(g)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    run(args.grids, args.seeds, args.methods, args.samples, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
