"""Does a per-layer rounding of all-MiniLM-L6-v2 that fits the calibration sentences also fit
held-out ones? One layer, layer-wise (float inputs), 4-bit per-channel MSE grid: the rounding is
chosen on the covariance of 256 calibration sentences, and its reconstruction error is measured on
the token inputs of 256 held-out sentences: E||dW x||^2 per token, split into the mean part
||dW mu||^2 and the rest::

    python benchmarks/minilm_heldout.py [--layer bert.encoder.layer.0.output.dense] [--seed 0]

Prints one JSON line per method (nearest, adaround with 500 iterations at lr 0.1, gptq/in-order).
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from qubo_round.extract import layer_problems
from qubo_round.grid import Grid
from qubo_round.models import minilm
from qubo_round.solvers import get_solver
from qubo_round.zoo import load_model

METHODS = (("nearest", {}), ("adaround", {"iterations": 500, "lr": 0.1}), ("gptq/in-order", {}))


def held_out_inputs(model, layer: str, batches) -> np.ndarray:
    """(tokens, cols) inputs of ``layer`` over ``batches`` (no padding: unpadded batches)."""
    mod = dict(model.named_modules())[layer]
    xs = []
    hook = mod.register_forward_hook(lambda m, i, o: xs.append(i[0].reshape(-1, i[0].shape[-1])))
    try:
        with torch.no_grad():
            for b in batches:
                model(**b)
    finally:
        hook.remove()
    return torch.cat(xs).double().numpy()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layer", default="bert.encoder.layer.0.output.dense")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    bundle = load_model("minilm")
    _, pool = minilm.sentence_split(0)
    X = held_out_inputs(bundle.model, args.layer, minilm.encode_unpadded(pool[-256:]))
    mu = X.mean(0)
    problem = layer_problems(bundle.model, args.layer, bundle.calibration(256, args.seed), Grid(bits=4))[0]
    W = dict(bundle.model.named_modules())[args.layer].weight.detach().double().numpy()
    for spec, params in METHODS:
        t = time.perf_counter()
        x = get_solver(spec, **params).solve(problem, seed=args.seed).samples[0]
        D = W - problem.space.dequantize(x)
        E = X @ D.T
        print(json.dumps({"layer": args.layer, "method": spec, "params": params, "seconds": time.perf_counter() - t,
                          "heldout_error": float(np.mean((E ** 2).sum(1))),
                          "heldout_mean_part": float(np.sum((D @ mu) ** 2)),
                          "heldout_rest": float(np.mean(((E - E.mean(0)) ** 2).sum(1)))}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
