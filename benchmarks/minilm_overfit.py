"""Why asymmetric reconstruction hurts all-MiniLM-L6-v2: mean cosine to the float embeddings on
the calibration sentences themselves and on held-out ones, for layer-wise and asymmetric
reconstruction, with and without the pipeline's polish (``gptq/in-order``, 4 bits per-channel,
256 calibration sentences, seed 0; nearest rounding for reference). Last, ``--blend a``: the
objective ``(1 - a) E_layerwise + a E_asymmetric``, a QUBO of the same form (the asymmetric
problem built from ``(1 - a) H + a H_hat`` and ``(1 - a) H + a C``; the pipeline has no such
setting, so the script substitutes the problem builder while those runs last), polish on::

    python benchmarks/minilm_overfit.py [--bits 4] [--solver gptq/in-order] [--samples 256] [--blend 0.25 0.5]

writes ``benchmarks/results/minilm_overfit.md`` and ``.json``. A large gap between the two columns
means the rounding fits the calibration sentences rather than the model.
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

RESULTS = Path(__file__).parent / "results"
log = logging.getLogger("minilm_overfit")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--solver", default="gptq/in-order")
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--blend", type=float, nargs="*", default=[0.25, 0.5],
                    help="weights a of the asymmetric loss in blended runs (none: skip them)")
    ap.add_argument("--out", type=Path, default=RESULTS / "minilm_overfit.md")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from qubo_round.models.minilm import embed, evaluation_batches

    t0 = time.perf_counter()
    b = load_model("minilm")
    calib, held = b.calibration(args.samples, args.seed), evaluation_batches(512)
    ref = {"calibration": embed(b.model, calib), "held-out": embed(b.model, held)}

    def cosines(model) -> dict:
        return {k: float((embed(model, batches) * ref[k]).sum(-1).mean())
                for k, batches in (("calibration", calib), ("held-out", held))}

    rows = [dict(reconstruction="-", polish="-", loss=None,
                 **cosines(nearest_model(b.model, calib[0], QuantConfig(bits=args.bits))), method="nearest")]
    for recon in ("layerwise", "asymmetric"):
        for polish in (False, True):
            cfg = QuantConfig(bits=args.bits, solver=args.solver, reconstruction=recon, polish=polish, seed=args.seed)
            q, rep = quantize_model(b.model, calib, cfg, progress=False)
            rows.append(dict(method=args.solver, reconstruction=recon, polish=polish, loss=rep.loss, **cosines(q)))
            log.info("%s", rows[-1])
    for a in args.blend:
        cfg = QuantConfig(bits=args.bits, solver=args.solver, seed=args.seed, asymmetric_weight=a)
        q, rep = quantize_model(b.model, calib, cfg, progress=False)
        rows.append(dict(method=args.solver, reconstruction=f"blend a = {a}", polish=True, loss=rep.loss, **cosines(q)))
        log.info("%s", rows[-1])
    meta = dict(argv=" ".join(__import__("sys").argv[1:] if argv is None else argv), bits=args.bits,
                samples=args.samples, seed=args.seed, machine=f"{platform.machine()}, {os.cpu_count()} CPU cores",
                torch=torch.__version__, seconds=time.perf_counter() - t0)
    lines = [f"# all-MiniLM-L6-v2, {args.bits} bits per-channel: calibration against held-out cosine", "",
             f"`python benchmarks/minilm_overfit.py {meta['argv']}`".replace(" `", "`"), "",
             f"{args.samples} calibration sentences (seed {args.seed}), 512 held-out sentences; mean cosine of each "
             f"sentence embedding to its float embedding. Loss: the report's total (each layer's reconstruction loss "
             f"on the calibration data, in that run's own inputs; for a blend, the blended loss). Machine: {meta['machine']}, torch {meta['torch']}; "
             f"{meta['seconds']:.0f} s.", "",
             "| method | reconstruction | polish | total loss | cosine, calibration | cosine, held-out | gap |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        loss = "-" if r["loss"] is None else f"{r['loss']:.1f}"
        lines.append(f"| {r['method']} | {r['reconstruction']} | {r['polish']} | {loss} | {r['calibration']:.4f} | "
                     f"{r['held-out']:.4f} | {r['calibration'] - r['held-out']:+.4f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
