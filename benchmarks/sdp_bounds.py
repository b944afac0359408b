"""Certified bounds per layer: per-row SDP (``ipm`` against ``bm``) and the shared-diagonal box bound.

For each layer's row QUBOs (every group of a grouped convolution), the certified SDP bound of
the chosen rows with the default backend ``ipm`` (rows in parallel threads, one BLAS thread
each), the same for ``bm`` on the first ``--bm-rows`` rows, the shared-diagonal box bound of
*all* rows (:mod:`qubo_round.box_bound`: one SDP per layer, then one batched computation;
layers with a shared matrix only) and the eigenvalue bound; prints a Markdown table (seconds
per layer and per row, the bounds' totals, ipm / bm and box / ipm on the rows both bounded, and
the round-to-nearest energy for scale) and writes ``OUT.md`` and ``OUT.json``.

    python benchmarks/sdp_bounds.py                                      # digits, W2, all rows
    python benchmarks/sdp_bounds.py --instances bqp100-1 bqp250-1 --bm-rows 1 \\
        --out benchmarks/results/sdp_bounds_bqp          # the bounds docstring's table
    python benchmarks/sdp_bounds.py --model minilm --layers bert.encoder.layer.0.output.dense \\
        --bits 4 --samples 128 --rows 4 --bm-rows 0 --out benchmarks/results/sdp_bounds_minilm
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from _results import write_results  # benchmarks/, the script's folder

ROOT = Path(__file__).resolve().parents[1]


def problems(model: str, layer: str, bits: int, samples: int, seed: int):
    from qubo_round.extract import layer_problems
    from qubo_round.grid import Grid
    from qubo_round.zoo import load_model

    bundle = load_model(model)
    return layer_problems(bundle.model, layer, bundle.calibration(samples, seed), Grid(bits=bits))


def measure(p, rows: int | None, bm_rows: int, seed: int) -> dict:
    from qubo_round.bounds import eig_bound, sdp_rows
    from qubo_round.box_bound import box_bound
    from qubo_round.problem import LayerQUBO

    idx = np.arange(p.rows if rows is None else min(rows, p.rows))
    t = time.perf_counter()
    ipm = sdp_rows(p, idx, backend="ipm", seed=seed)
    t_ipm = time.perf_counter() - t
    t = time.perf_counter()
    eig = eig_bound(p, rows=idx)
    t_eig = time.perf_counter() - t
    b_ipm = np.array([r.bound for r in ipm])
    nearest = p.energies(p.from_rounding(p.space.nearest())) if p.space is not None else None
    out = {"rows": int(len(idx)), "free_median": float(np.median(p.num_free[idx])),
           "ipm_seconds": t_ipm, "ipm_row_seconds_median": float(np.median([r.seconds for r in ipm])),
           "ipm_total": float(b_ipm.sum()), "eig_seconds": t_eig, "eig_total": float(eig.sum()),
           "ipm_bounds": b_ipm.tolist(), "all_rows": int(p.rows), "nearest_total": None if nearest is None else float(nearest.sum())}
    if isinstance(p, LayerQUBO) and p.shared:
        box = box_bound(p)
        out.update(box_seconds=box.seconds, box_sdp_seconds=box.info["sdp_seconds"], box_iterations=box.iterations,
                   box_total=float(box.values.sum()), box_over_ipm=float(box.values[idx].sum() / b_ipm.sum()),
                   box_bounds=box.values.tolist())
    if bm_rows:
        jb = idx[:bm_rows]
        t = time.perf_counter()
        bm = sdp_rows(p, jb, backend="bm", seed=seed)
        out.update(bm_rows=int(len(jb)), bm_seconds=time.perf_counter() - t,
                   bm_row_seconds_median=float(np.median([r.seconds for r in bm])),
                   bm_bounds=[r.bound for r in bm],
                   ipm_over_bm=float(b_ipm[:len(jb)].sum() / sum(r.bound for r in bm)))
    return out


def markdown(results: list[dict], header: str) -> str:
    lines = [header, "",
             "| layer | bits | rows | median free | ipm s/layer | ipm s/row (median) | ipm total | "
             "bm rows | bm s/row (median) | ipm/bm on those rows | eig total (s) | "
             "box s, all rows (SDP s) | box total, all rows | box/ipm on the ipm rows | nearest energy, all rows |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        bm = (f"{r['bm_rows']} | {r['bm_row_seconds_median']:.1f} | {r['ipm_over_bm']:.5f}" if "bm_rows" in r
              else "0 | - | -")
        box = (f"{r['box_seconds']:.1f} ({r['box_sdp_seconds']:.1f}) | {r['box_total']:.6g} | {r['box_over_ipm']:.3f}"
               if "box_total" in r else "- | - | -")
        near = "-" if r["nearest_total"] is None else f"{r['nearest_total']:.6g}"
        lines.append(f"| {r['layer']} | {r['bits']} | {r['rows']} | {r['free_median']:.0f} | {r['ipm_seconds']:.1f} | "
                     f"{r['ipm_row_seconds_median']:.2f} | {r['ipm_total']:.6g} | {bm} | "
                     f"{r['eig_total']:.4g} ({r['eig_seconds']:.1f}) | {box} | {near} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instances", nargs="+", default=None,
                    help="public instances by name (bqp100-1 ...) instead of --model's layers")
    ap.add_argument("--model", default="digits")
    ap.add_argument("--layers", nargs="+", default=["conv2", "conv3", "fc1", "fc2"])
    ap.add_argument("--bits", type=int, default=2)
    ap.add_argument("--samples", type=int, default=1024)
    ap.add_argument("--rows", type=int, default=None, help="first ROWS rows of each problem (default: all)")
    ap.add_argument("--bm-rows", type=int, default=2, help="rows also bounded with bm (0: none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "sdp_bounds")
    a = ap.parse_args(argv)
    if a.rows is not None and a.rows < 1:
        raise SystemExit(f"--rows must be >= 1, got {a.rows}")
    if a.bm_rows < 0:
        raise SystemExit(f"--bm-rows must be >= 0, got {a.bm_rows}")
    results = []
    if a.instances:
        from qubo_round.instances import load_instance
        for spec in a.instances:
            r = measure(load_instance(spec), a.rows, a.bm_rows, a.seed)
            r.update(layer=spec, bits="-")
            results.append(r)
    for layer in [] if a.instances else a.layers:
        for g, p in enumerate(problems(a.model, layer, a.bits, a.samples, a.seed)):
            r = measure(p, a.rows, a.bm_rows, a.seed)
            r.update(layer=layer if p.meta.get("groups", 1) == 1 and g == 0 else f"{layer}-g{g}", bits=a.bits)
            results.append(r)
            print(f"  {r['layer']}: ipm {r['ipm_seconds']:.1f} s for {r['rows']} rows", file=sys.stderr, flush=True)
    cpu = platform.processor() or platform.machine()
    header = (f"# Certified bounds per layer: per-row SDP (ipm, bm), shared-diagonal box, eigenvalue\n\n`python benchmarks/sdp_bounds.py "
              f"{' '.join(argv if argv is not None else sys.argv[1:])}` on {os.cpu_count()} CPU cores ({cpu}); "
              f"{'instances ' + ', '.join(a.instances) if a.instances else f'model {a.model}, {a.samples} calibration samples'}, "
              f"seed {a.seed}. Rows run in parallel threads "
              f"(one BLAS thread each); 'total' is the sum of the rows' certified bounds (energy units); "
              f"ipm, bm and eig bound the first 'rows' rows, box every row of the layer.")
    write_results(a.out, markdown(results, header), a, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
