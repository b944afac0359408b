"""Which kernels set the bits of the digits retrain: the shipped checkpoint against retrains of it
on this machine with torch's, oneDNN's and MKL's code paths forced by their environment variables.

Each setting runs ``python -m qubo_round.models.train_digits --seed S --epochs E`` (the shipped
metrics' seed and epochs) in a fresh interpreter (the variables are read when torch loads), and
compares the retrained weights with the shipped checkpoint and with the first setting's retrain
(this machine's own kernels): bit for bit, test accuracy, equal test predictions. Two runs of the
first setting check that the retrain is bitwise reproducible on one machine::

    python benchmarks/digits_retrain_kernels.py [--out benchmarks/results/digits_retrain_kernels]

Writes ``OUT.md`` and ``OUT.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from _results import write_results
from qubo_round.bench.machine import machine_line
from qubo_round.models import digits

#: (label, environment) in the order they run; the first is this machine's own kernels.
SETTINGS = (
    ("this machine's kernels", {}),
    ("this machine's kernels, again", {}),
    ("ATen AVX2", {"ATEN_CPU_CAPABILITY": "avx2"}),
    ("ATen scalar (DEFAULT)", {"ATEN_CPU_CAPABILITY": "default"}),
    ("ATen AVX2, oneDNN AVX2", {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}),
    ("MKL conditional reproducibility (CBWR COMPATIBLE)", {"MKL_CBWR": "COMPATIBLE"}),
    ("ATen scalar, oneDNN SSE4.1, MKL CBWR COMPATIBLE",
     {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_CBWR": "COMPATIBLE"}),
)
KERNEL_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS")


def retrain(env: dict, seed: int, epochs: int, out: Path) -> dict:
    """Run the retrain in a fresh interpreter under ``env``; its metrics JSON."""
    base = {k: v for k, v in os.environ.items() if k not in KERNEL_VARIABLES}
    cmd = [sys.executable, "-m", "qubo_round.models.train_digits", "--seed", str(seed), "--epochs", str(epochs),
           "--out", str(out)]
    subprocess.run(cmd, env={**base, **env}, check=True, capture_output=True, text=True)
    return json.loads(out.with_suffix(".json").read_text())


def compare(a: dict, b: dict, data: digits.DigitsData) -> tuple[bool, float]:
    """(bit-identical state dicts, fraction of equal test predictions)."""
    same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    preds = []
    for state in (a, b):
        m = digits.DigitsCNN()
        m.load_state_dict(state)
        with torch.no_grad():
            preds.append(m.eval()(data.x_test).argmax(1))
    return same, float((preds[0] == preds[1]).float().mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/digits_retrain_kernels"))
    args = p.parse_args()
    shipped_metrics = json.loads(Path(digits.__file__).with_name(digits.METRICS_NAME).read_text())
    shipped = digits.load_pretrained().state_dict()
    seed, epochs = shipped_metrics["seed"], shipped_metrics["epochs"]
    data = digits.load_digits_data(seed)
    rows, first = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, env) in enumerate(SETTINGS):
            out = Path(tmp) / f"retrain{i}.pt"
            metrics = retrain(env, seed, epochs, out)
            state = torch.load(out, weights_only=True)
            first = state if first is None else first
            bits_shipped, pred_shipped = compare(state, shipped, data)
            bits_first, pred_first = compare(state, first, data)
            rows.append({"setting": label, "env": env, "test_accuracy": metrics["test_accuracy"],
                         "cpu_capability": metrics.get("cpu_capability"), "bitwise_shipped": bits_shipped,
                         "same_predictions_shipped": pred_shipped, "bitwise_first": bits_first,
                         "same_predictions_first": pred_first})
            print(f"{label}: {metrics['test_accuracy']:.5f}", file=sys.stderr)
    md = ["# The digits retrain under forced kernels", "",
          f"`python benchmarks/digits_retrain_kernels.py`; {machine_line()}; seed {seed}, {epochs} epochs. "
          f"Shipped checkpoint: test accuracy {shipped_metrics['test_accuracy']:.5f} (trained with torch "
          f"{shipped_metrics['torch_version']} on a machine its metrics do not name). 'first': this machine's "
          "own kernels (the first row).", "",
          "| setting | environment | test accuracy | torch capability | = shipped, bit for bit | "
          "equal predictions to shipped | = first, bit for bit | equal predictions to first |",
          "|---|---|---:|---|---|---:|---:|---:|"]
    for r in rows:
        env = " ".join(f"`{k}={v}`" for k, v in r["env"].items()) or "-"
        md.append(f"| {r['setting']} | {env} | {r['test_accuracy']:.5f} | {r['cpu_capability']} | "
                  f"{'yes' if r['bitwise_shipped'] else 'no'} | {r['same_predictions_shipped']:.4f} | "
                  f"{'yes' if r['bitwise_first'] else 'no'} | {r['same_predictions_first']:.4f} |")
    write_results(args.out, "\n".join(md), args, rows)


if __name__ == "__main__":
    main()
