"""Layer-parallel quantization on a local Dask cluster against the serial run, same machine.

Layer-wise reconstruction, the same configuration both ways; the serial run is
``quantize_model(...)``, the parallel one ``quantize_model(..., client=Client(LocalCluster(W)))``
with the cluster started before the clock (its start-up is reported on its own). The two models
must be bit-identical (the script stops otherwise). Wall times are the best of ``--repeats``
interleaved runs.

    python benchmarks/layer_parallel.py [--model minilm] [--solver adaround] [--param iterations=300]
        [--workers 2] [--repeats 1] [--samples 128]

writes ``benchmarks/results/layer_parallel.md`` and ``.json``.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

from qubo_round.pipeline import QuantConfig, quantize_model
from qubo_round.pipeline.cli import parse_params
from qubo_round.zoo import load_model

from _results import write_results  # benchmarks/, the script's folder

RESULTS = Path(__file__).parent / "results"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--solver", default="adaround")
    ap.add_argument("--param", action="append", default=None, metavar="KEY=VALUE",
                    help="solver parameter (default for adaround: iterations=300)")
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS / "layer_parallel")
    a = ap.parse_args(argv)
    if a.param is None:
        a.param = ["iterations=300"] if a.solver == "adaround" else []
    from distributed import Client, LocalCluster

    b = load_model(a.model)
    calib = b.calibration(a.samples, 0)
    cfg = QuantConfig(bits=a.bits, solver=a.solver, solver_params=parse_params(a.param), reconstruction="layerwise")
    t = time.perf_counter()
    cluster = LocalCluster(n_workers=a.workers, threads_per_worker=1, dashboard_address=None)
    client = Client(cluster)
    startup = time.perf_counter() - t
    serial, parallel = [], []
    try:
        for k in range(a.repeats):
            for mode in (("serial", "parallel") if k % 2 == 0 else ("parallel", "serial")):
                t = time.perf_counter()
                q, rep = quantize_model(b.model, calib, cfg, progress=False,
                                        client=client if mode == "parallel" else None)
                (serial if mode == "serial" else parallel).append((time.perf_counter() - t, q, rep))
                print(f"  {mode}: {serial[-1][0] if mode == 'serial' else parallel[-1][0]:.1f} s", file=sys.stderr)
    finally:
        client.close()
        cluster.close()
    s_sd, p_sd = serial[0][1].state_dict(), parallel[0][1].state_dict()
    if not all(torch.equal(s_sd[k], p_sd[k]) for k in s_sd):
        raise SystemExit("the parallel model differs from the serial one")
    ts, tp = min(r[0] for r in serial), min(r[0] for r in parallel)
    layers = len(serial[0][2].layers)
    res = {"serial_seconds": ts, "parallel_seconds": tp, "speedup": ts / tp, "cluster_startup_seconds": startup,
           "layers": layers, "workers": a.workers, "loss": serial[0][2].loss, "identical": True,
           "cpus": os.cpu_count(), "machine": platform.machine(), "torch": torch.__version__}
    cmd = " ".join(argv if argv is not None else sys.argv[1:])
    md = "\n".join([
        "# Layer-parallel quantization on a local Dask cluster", "",
        f"`python benchmarks/layer_parallel.py {cmd}`".replace(" `", "`"), "",
        f"{a.model}, {layers} layers, W{a.bits} per-channel, {a.solver} {' '.join(a.param)}, layer-wise "
        f"reconstruction, {a.samples} calibration samples, seed 0; {os.cpu_count()} CPU cores "
        f"({platform.machine()}, torch {torch.__version__}); best of {a.repeats}. The models are bit-identical.", "",
        "| run | wall s | speed-up |", "|---|---:|---:|",
        f"| serial | {ts:.1f} | 1.00 |",
        f"| {a.workers} local workers | {tp:.1f} | {ts / tp:.2f} |", "",
        f"Starting the LocalCluster took {startup:.1f} s more (once per session)."])
    write_results(a.out, md, a, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
