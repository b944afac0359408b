"""Retrain the embedded digits CNN and write its checkpoint and metrics.

Usage::

    python -m qubo_round.models.train_digits [--seed 0] [--epochs 50] [--out PATH]

Writes ``PATH`` (a plain ``state_dict`` saved with ``torch.save``; default: the package's
``digits_cnn.pt``) and, beside it, ``PATH`` with suffix ``.json`` holding the metrics (test
accuracy, seed, epochs, torch version, ...).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
from pathlib import Path
from typing import Any

import torch

from qubo_round.models.digits import CHECKPOINT_NAME, DEFAULT_EPOCHS, train_digits

DEFAULT_OUT = Path(__file__).resolve().with_name(CHECKPOINT_NAME)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m qubo_round.models.train_digits",
        description="Retrain the digits CNN and write its checkpoint plus a metrics JSON.",
    )
    parser.add_argument("--seed", type=int, default=0, help="training seed (default: 0)")
    parser.add_argument(
        "--epochs", type=int, default=DEFAULT_EPOCHS, help=f"epochs (default: {DEFAULT_EPOCHS})"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"checkpoint path (default: {DEFAULT_OUT})"
    )
    return parser.parse_args(argv)


def write_checkpoint(model: torch.nn.Module, metrics: dict[str, Any], out: Path) -> Path:
    """Save ``model.state_dict()`` to ``out`` and ``metrics`` to ``out`` with suffix ``.json``.

    Returns:
        The path of the metrics JSON.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, out)
    record = dict(metrics)
    record["torch_version"] = torch.__version__
    record["python_version"] = platform.python_version()
    # the SIMD kernels torch dispatched to, for information: the bits of a 50-epoch training also
    # follow oneDNN's and MKL's code paths (benchmarks/digits_retrain_kernels.py), so a bit-for-bit
    # retrain is promised on the same machine only
    record["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    record["checkpoint"] = out.name
    record["checkpoint_bytes"] = out.stat().st_size
    json_path = out.with_suffix(".json")
    json_path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return json_path


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    model, metrics = train_digits(seed=args.seed, epochs=args.epochs)
    json_path = write_checkpoint(model, metrics, args.out)
    print(
        f"test accuracy {metrics['test_accuracy']:.4f} (seed={args.seed}, epochs={args.epochs}, "
        f"{metrics['train_seconds']:.1f}s)"
    )
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes) and {json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
