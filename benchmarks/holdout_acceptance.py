"""Roundings that generalise: held-out acceptance of the solver's and the polish's changes.

The digits CNN at ``--bits`` with ``adaround`` (the default solver), four settings: polish on or
off, with no holdout or with ``--holdout`` of the calibration batches held out (a row then takes
the solver's or the polish's change only where its held-out loss falls too; the same 1024
calibration images in total). Per calibration seed (``--seed``: calibration sample and solver
seed) the test accuracy (540 images) and the total fitted / held-out losses; the mean over seeds
with its standard error (over seeds) and the binomial standard error of one accuracy.

    python benchmarks/holdout_acceptance.py [--bits 2 3] [--seeds 0 1 2] [--holdout 0.25]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"


def run(bits: int, seed: int, polish: bool, holdout: float) -> dict:
    cmd = ["qubo-round", "quantize", "--model", "digits", "--bits", str(bits), "--seed", str(seed),
           "--holdout", str(holdout), "--no-progress", "--json"] + ([] if polish else ["--no-polish"])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    d = json.loads(out)
    layers = d["layers"]
    return {"bits": bits, "seed": seed, "polish": polish, "holdout": holdout, "accuracy": d["accuracy"],
            "loss": sum(r["loss"] for r in layers),
            "holdout_loss": None if holdout == 0 else sum(r["holdout_loss"] for r in layers),
            "rows_refused": None if holdout == 0 else sum(r["rows_refused"] for r in layers)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bits", type=int, nargs="+", default=[2, 3])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--holdout", type=float, default=0.25)
    ap.add_argument("--out", type=Path, default=RESULTS / "holdout_acceptance")
    a = ap.parse_args(argv)
    if not 0 < a.holdout < 1:
        raise SystemExit(f"--holdout must be in (0, 1), got {a.holdout}")
    rows = []
    for bits in a.bits:
        for seed in a.seeds:
            for polish in (False, True):
                for h in (0.0, a.holdout):
                    rows.append(run(bits, seed, polish, h))
                    r = rows[-1]
                    print(f"  W{bits} seed {seed} polish {polish} holdout {h}: {100 * r['accuracy']:.2f}%",
                          file=sys.stderr, flush=True)
    md = markdown(rows, a, argv)
    print(md)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".md").write_text(md + "\n")
    a.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    return 0


def markdown(rows: list[dict], a, argv) -> str:
    n_test = 540
    p = float(np.mean([r["accuracy"] for r in rows]))
    lines = ["# Held-out acceptance of roundings (digits CNN, adaround)", "",
             f"`python benchmarks/holdout_acceptance.py {' '.join(argv if argv is not None else sys.argv[1:])}` on "
             f"{os.cpu_count()} CPU cores ({platform.machine()}); 1024 calibration images in every setting, seeds "
             f"{a.seeds} (calibration sample and solver). Accuracy on the 540 test images: mean over seeds "
             f"+- its standard error over seeds; one accuracy's binomial standard error is about "
             f"{100 * np.sqrt(p * (1 - p) / n_test):.2f} points at the mean accuracy {100 * p:.1f}% (one test "
             f"image is 0.19 points). The fitted loss is on the fitted batches (768 images with the holdout, "
             f"1024 without), so it is not comparable across the holdout column.", "",
             "| bits | polish | holdout | test accuracy per seed (%) | mean +- s.e. (%) | fitted loss (mean) | "
             "held-out loss (mean) | row changes refused (mean) |", "|---:|---|---:|---|---:|---:|---:|---:|"]
    for bits in a.bits:
        for polish in (False, True):
            for h in (0.0, a.holdout):
                rs = [r for r in rows if r["bits"] == bits and r["polish"] == polish and r["holdout"] == h]
                acc = 100 * np.array([r["accuracy"] for r in rs])
                se = acc.std(ddof=1) / np.sqrt(len(acc)) if len(acc) > 1 else float("nan")
                hl = "-" if h == 0 else f"{np.mean([r['holdout_loss'] for r in rs]):.4g}"
                ref = "-" if h == 0 else f"{np.mean([r['rows_refused'] for r in rs]):.1f}"
                lines.append(f"| {bits} | {'on' if polish else 'off'} | {h:g} | "
                             f"{', '.join(f'{x:.2f}' for x in acc)} | {acc.mean():.2f} +- {se:.2f} | "
                             f"{np.mean([r['loss'] for r in rs]):.4g} | {hl} | {ref} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
