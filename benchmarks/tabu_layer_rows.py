"""Why dwave-samplers' tabu search trails our ``its`` on layer rows: dead inputs, tenure, scale.

On rows 0 and 1 of the digits fc1 layer at 2 bits (1024 calibration images, seed 0, the problem of
``qubo-round problem --model digits --layer fc1 --bits 2 --samples 1024``), one read of
``TabuSampler`` on the row's BQM (``qubo_round.convert.to_bqm``):

* as it is, and with the dead inputs (zero columns of ``Q_k``, ``problem.inert``) fixed at 0, with
  timeouts of 20 ms and 1 s;
* row 0, dead inputs fixed, 1 s, tenures 5, 20 (the sampler's default ``min(20, n/4)``), 45, 100;
* row 0, dead inputs fixed, 1 s: the BQM without its offset and scaled by 1e4 (energies mapped
  back), which must give the same energy if the coefficients' scale does not matter.

    python benchmarks/tabu_layer_rows.py [--out benchmarks/results/tabu_layer_rows.md]

Energies are the rows' reconstruction losses. The search stops on a clock: a slower machine
searches less.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    from dwave.samplers import TabuSampler

    from qubo_round.convert import to_bqm
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from layer_solvers import build

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "tabu_layer_rows.md")
    a = ap.parse_args(argv)
    p = build("fc1", 2)[0]
    inert = p.inert

    def bqm(k: int, dead_fixed: bool):
        b = to_bqm(p, k)
        if dead_fixed:
            for v in [v for v in b.variables if inert[k, v]]:
                b.fix_variable(v, 0)
        return b

    def energy(b, timeout: int, **kw) -> float:
        return float(TabuSampler().sample(b, timeout=timeout, num_reads=1, seed=1, **kw).first.energy)

    lines = ["| row | case | energy |", "|---|---|---:|"]
    for k in (0, 1):
        for dead_fixed in (False, True):
            for timeout in (20, 1000):
                case = f"dead inputs {'fixed' if dead_fixed else 'free'}, timeout {timeout} ms"
                lines.append(f"| {k} | {case} | {energy(bqm(k, dead_fixed), timeout):.6f} |")
    b = bqm(0, True)
    for tenure in (5, 20, 45, 100):
        lines.append(f"| 0 | dead inputs fixed, 1 s, tenure {tenure} | {energy(b, 1000, tenure=tenure):.6f} |")
    offset = b.offset
    scaled = b.copy()
    scaled.offset = 0.0
    scaled.scale(1e4)
    lines.append(f"| 0 | dead inputs fixed, 1 s, no offset, scaled by 1e4 | {energy(scaled, 1000) / 1e4 + offset:.6f} |")
    md = "\n".join(lines)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("# dwave tabu on fc1 W2 rows\n\n`python benchmarks/tabu_layer_rows.py` on this 2-core "
                     "AMD EPYC VM (AVX512).\n\n" + md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
