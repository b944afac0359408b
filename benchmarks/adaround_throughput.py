"""AdaRound's covariance-form step on MiniLM: achieved GFLOP/s per layer against this machine's
measured matmul peak, and the paper-scale run (10k iterations on all 36 layers) against its floor.

One step of ``adaround`` on a layer of ``rows x n`` costs one product ``h (rows, n) @ H (n, n)``
(the loss's gradient; the loss itself comes from the same product): ``2 rows n^2`` flops, the
"nominal" count used here. The active-set compaction (``relaxations.active``) drops converged
variables late in the run, so the nominal rate can exceed the product's own rate.

The peak is measured in the same process: float32 ``torch.mm`` of each layer's exact shape (just
before its run) and of a square 1536 x 1536 product, with the same thread count, fastest of 10;
"peak" is the highest of these rates for that thread count (this VM's rates vary by up to ~1.5x
between measurements, so the fraction of peak is a lower estimate of the true fraction). The layers are block
``--blocks`` of all-MiniLM-L6-v2 (query, key, value, attention output: 384 x 384; intermediate:
1536 x 384; output: 384 x 1536), layer-wise covariance problems on ``--samples`` calibration
sentences (seed 0), W4 per-channel; all six blocks have these shapes, so the 36-layer time is
extrapolated as 6 x (block's per-step times) x 10000 and the floor as its flops at the peak.

Each layer runs with the eager and the compiled (torch.compile-fused) element-wise kernel
(``--kernels``), the compilation done once before any timing.

    python benchmarks/adaround_throughput.py [--iterations 1000] [--threads 1 2] [--blocks 0] [--kernels eager compiled]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from qubo_round.extract import layer_problems
from qubo_round.grid import Grid
from qubo_round.solvers import get_solver
from qubo_round.zoo import load_model

from _results import write_results  # benchmarks/, the script's folder

RESULTS = Path(__file__).parent / "results"
KINDS = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
         "intermediate.dense", "output.dense")


def mm_gflops(m: int, k: int, n: int, repeats: int = 10) -> float:
    """Fastest float32 ``(m, k) @ (k, n)`` of ``repeats`` in GFLOP/s."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    reps = max(1, int(2e9 // (2 * m * k * n)))
    a @ b
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = min(best, (time.perf_counter() - t) / reps)
    return 2 * m * k * n / best / 1e9


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--blocks", type=int, nargs="+", default=[0])
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--kernels", nargs="+", default=["eager", "compiled"], choices=["eager", "compiled"],
                    help="adaround's element-wise step: eager torch ops and/or the torch.compile-fused kernel")
    ap.add_argument("--out", type=Path, default=RESULTS / "adaround_throughput")
    a = ap.parse_args(argv)
    if a.iterations < 1 or any(t < 1 for t in a.threads):
        raise SystemExit("--iterations and --threads must be >= 1")
    bundle = load_model("minilm")
    calib = bundle.calibration(a.samples, 0)
    names = [f"bert.encoder.layer.{b}.{k}" for b in a.blocks for k in KINDS]
    problems = {n: layer_problems(bundle.model, n, calib, Grid(bits=4))[0] for n in names}
    results = []
    if "compiled" in a.kernels:  # compile once before any timing (dynamic shapes: every layer reuses it)
        warm = next(iter(problems.values()))
        get_solver("adaround", iterations=60, kernel="compiled").solve(warm.select_rows([0, 1]), seed=0)
    for t in a.threads:
        torch.set_num_threads(t)
        square = mm_gflops(1536, 1536, 1536)
        for name, p in problems.items():
            rows, n = p.shape
            shape_peak = mm_gflops(rows, n, n)
            for kernel in a.kernels:
                solver = get_solver("adaround", iterations=a.iterations, threads=t, kernel=kernel)
                t0 = time.perf_counter()
                solver.solve(p, seed=0)
                sec = time.perf_counter() - t0
                step = sec / a.iterations
                gf = 2 * rows * n * n / step / 1e9
                results.append({"threads": t, "kernel": kernel, "layer": name, "rows": rows, "n": n, "seconds": sec,
                                "step_ms": 1e3 * step, "gflops": gf, "shape_mm_gflops": shape_peak,
                                "square_mm_gflops": square})
                print(f"  {t} thread(s) {kernel} {name}: {1e3 * step:.2f} ms/step, {gf:.1f} GFLOP/s "
                      f"(mm of that shape {shape_peak:.1f}, square {square:.1f})", file=sys.stderr, flush=True)
    lines = ["# AdaRound's covariance step on MiniLM: GFLOP/s against the matmul peak", "",
             f"`python benchmarks/adaround_throughput.py {' '.join(argv if argv is not None else sys.argv[1:])}` "
             f"on {os.cpu_count()} CPU cores ({platform.machine()}, torch {torch.__version__}, "
             f"capability {torch.backends.cpu.get_cpu_capability()}); {a.iterations} iterations per layer, "
             f"{a.samples} calibration sentences, seed 0, W4 per-channel. Nominal flops 2 rows n^2 per step.", "",
             "| threads | kernel | layer | rows x n | ms/step | GFLOP/s | mm of that shape | fraction | peak (best mm) | fraction of peak |",
             "|---:|---|---|---|---:|---:|---:|---:|---:|---:|"]
    peak = {t: max(max(r["shape_mm_gflops"], r["square_mm_gflops"]) for r in results if r["threads"] == t)
            for t in a.threads}
    for r in results:
        r["peak_gflops"] = peak[r["threads"]]
        lines.append(f"| {r['threads']} | {r['kernel']} | {r['layer'].removeprefix('bert.encoder.')} | {r['rows']} x {r['n']} | "
                     f"{r['step_ms']:.2f} | {r['gflops']:.1f} | {r['shape_mm_gflops']:.1f} | "
                     f"{r['gflops'] / r['shape_mm_gflops']:.2f} | {r['peak_gflops']:.1f} | "
                     f"{r['gflops'] / r['peak_gflops']:.2f} |")
    lines += ["", "Paper scale (10000 iterations, all 36 layers = 6 blocks of these shapes), extrapolated:", "",
              "| threads | kernel | predicted run | floor at the peak | run / floor |", "|---:|---|---:|---:|---:|"]
    for t in a.threads:
        for kernel in a.kernels:
            rs = [r for r in results if r["threads"] == t and r["kernel"] == kernel]
            per_block = {r["layer"].split(".", 4)[-1]: r for r in rs}  # one per shape kind (the last block's)
            run = 6 * 10000 * sum(r["step_ms"] for r in per_block.values()) / 1e3
            flops = 6 * 10000 * sum(2 * r["rows"] * r["n"] ** 2 for r in per_block.values())
            floor = flops / (peak[t] * 1e9)
            lines.append(f"| {t} | {kernel} | {run / 60:.1f} min | {floor / 60:.1f} min | {run / floor:.2f} |")
    write_results(a.out, "\n".join(lines), a, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
