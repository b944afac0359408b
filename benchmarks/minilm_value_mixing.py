"""all-MiniLM-L6-v2: the attention value projections solved on the loss the network sees.

In self-attention the value projection's output is mixed over tokens by each head's attention
weights before anything else reads it: head ``h`` returns ``P_h (X W_h^T)``, so the error of
rounding ``W_h`` (the 32 rows of head ``h``) that reaches the next layer is ``P_h X dW_h^T``, and
its loss is ``tr(dW_h H_h dW_h^T)`` with the *mixed* second moment::

    H_h = E_tokens[(P_h X)_t (P_h X)_t^T]          (384 x 384 per head, float attention P_h)

instead of the per-token ``H = E[x x^T]`` of the layer-wise QUBO. ``H_h`` is a per-row Hessian
(rows of head ``h`` share it): one covariance QUBO per head, the heads stacked into one family
with per-row matrices (:func:`qubo_round.problem.stack_rows`), which every solver takes and the
relaxations solve with one batched product per step.

The run: each method quantizes the whole network layer-wise (``quantize_model``, groups of
``--group-size`` columns, MSE scales); then the six value projections are solved again, the same
method on the mixed Hessians from the same calibration sentences and float network (followed by
the single-flip polish on that QUBO, as the pipeline does), and written into that network.
Held-out metrics (512 sentences, mean +- standard error over sentences) before and after::

    python benchmarks/minilm_value_mixing.py [--methods adaround gptq/in-order] [--bits 4] \\
        [--group-size 128] [--adaround-iterations 500] [--samples 256] [--seed 0] \\
        [--out benchmarks/results/minilm_value_mixing]

The measurement that found the lever (issue 15 part 2); the pipeline now has it as
``QuantConfig(value_loss="attention")`` (:mod:`qubo_round.attention`), which solves the value
projections on the mixed loss in the first place instead of again
(``benchmarks/minilm_default.py`` measures it).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from qubo_round.bench.machine import machine_line
from qubo_round.builders import covariance_problem
from qubo_round.grid import Grid, rounding_space
from qubo_round.pipeline import QuantConfig, quantize_model
from qubo_round.problem import stack_rows
from qubo_round.solvers import get_solver
from qubo_round.solvers.greedy import polish
from qubo_round.zoo import load_model

from minilm_layer_attribution import cli, write  # the sibling script (benchmarks/ is on sys.path)

log = logging.getLogger("minilm_value_mixing")


def mixed_hessians(model, layer: int, calib) -> np.ndarray:
    """(heads, cols, cols) float64 ``H_h`` of block ``layer``'s value projection (module docstring),
    from the float network's queries, keys and value inputs on the calibration batches."""
    att = model.bert.encoder.layer[layer].attention.self
    nh, dh = att.num_attention_heads, att.attention_head_size
    cap: dict = {}
    hooks = [att.query.register_forward_hook(lambda m, i, o: cap.__setitem__("q", o.detach())),
             att.key.register_forward_hook(lambda m, i, o: cap.__setitem__("k", o.detach())),
             att.value.register_forward_hook(lambda m, i, o: cap.__setitem__("x", i[0].detach()))]
    cols = att.value.in_features
    H = torch.zeros(nh, cols, cols, dtype=torch.float64)
    tokens = 0
    try:
        with torch.no_grad():
            for batch in calib:
                model(**batch)
                mask = batch["attention_mask"].bool()
                B, T = mask.shape
                Q = cap["q"].view(B, T, nh, dh).transpose(1, 2)
                K = cap["k"].view(B, T, nh, dh).transpose(1, 2)
                s = (Q @ K.transpose(-1, -2) / dh ** 0.5).masked_fill(~mask[:, None, None, :], float("-inf"))
                M = s.softmax(-1).double() @ cap["x"].double()[:, None]  # (B, heads, T, cols): P_h X
                M = M * mask[:, None, :, None]  # padded query positions are never read
                H += torch.einsum("bhti,bhtj->hij", M, M)
                tokens += int(mask.sum())
    finally:
        for h in hooks:
            h.remove()
    return (H / tokens).numpy()


def _solve(method: str, problem, iterations: int, seed: int) -> np.ndarray:
    params = {"iterations": iterations, "lr": 0.1} if method.startswith("adaround") else {}
    return polish(problem, get_solver(method, **params).solve(problem, seed=seed).best)  # the pipeline's polish


def run(methods, bits: int, group: int, samples: int, seed: int, iterations: int, out: Path) -> dict:
    t_all = time.perf_counter()
    bundle = load_model("minilm")
    calib = bundle.calibration(samples, seed)
    model = bundle.model
    grid = Grid(bits=bits, group_size=group or None)
    blocks = len(model.bert.encoder.layer)
    Hs = [mixed_hessians(model, i, calib) for i in range(blocks)]
    records = []
    for method in methods:
        params = {"iterations": iterations, "lr": 0.1} if method.startswith("adaround") else {}
        cfg = QuantConfig(bits=bits, group_size=group or None, solver=method, solver_params=params, seed=seed,
                          reconstruction="layerwise")
        t = time.perf_counter()
        q, rep = quantize_model(model, calib, cfg, progress=False)
        seconds = time.perf_counter() - t
        before = bundle.evaluate(q)
        t = time.perf_counter()
        losses = []
        for i in range(blocks):
            name = f"bert.encoder.layer.{i}.attention.self.value"
            W = model.get_submodule(name).weight.detach().double().numpy()
            space = rounding_space(W, grid)
            heads = Hs[i].shape[0]
            dh = W.shape[0] // heads
            # one shared matrix per head, the heads stacked: the relaxations multiply each head's
            # rows by its own H_h in one batched product (stack_rows' row groups)
            problem = stack_rows([covariance_problem(W[h * dh:(h + 1) * dh], Hs[i][h],
                                                     space=space.select_rows(np.arange(h * dh, (h + 1) * dh)),
                                                     layer=name, head=h) for h in range(heads)])
            X = _solve(method, problem, iterations, seed + i)
            old = space.check_assignment((rep.qstate[name].q.numpy().reshape(W.shape) - space.L).astype(np.uint8))
            losses.append({"layer": name, "mixed loss, layer-wise rounding": problem.energy(problem.from_rounding(old)),
                           "mixed loss, mixed rounding": problem.energy(X)})
            with torch.no_grad():
                q.get_submodule(name).weight.copy_(torch.as_tensor(space.dequantize(problem.to_rounding(X))).float())
        after = bundle.evaluate(q)
        records.append({"method": method, "seconds": seconds, "value_seconds": time.perf_counter() - t,
                        "layerwise": before, "mixed_values": after, "layers": losses})
        log.info("%s: %.4f -> %.4f", method, before["mean_cosine"], after["mean_cosine"])
    header = {"model": "all-MiniLM-L6-v2", "bits": bits, "grid": f"per-channel symmetric, MSE scales"
              f"{f', groups of {group}' if group else ''}", "calibration_sentences": samples, "seed": seed,
              "adaround_iterations": iterations,
              "machine": machine_line(), "total_seconds": time.perf_counter() - t_all}
    return write(out, {"header": header, "records": records}, to_markdown)


def to_markdown(result: dict) -> str:
    h = result["header"]
    lines = ["# all-MiniLM-L6-v2: value projections on the attention-mixed loss", ""]
    lines += [f"- {k.replace('_', ' ')}: {v:.0f} s" if k == "total_seconds" else f"- {k.replace('_', ' ')}: {v}"
              for k, v in h.items()]
    lines += ["", "Held-out mean over 512 sentences +- standard error over sentences. quantize s: the layer-wise "
              "run; value s: the six value projections solved again on their mixed Hessians.", "",
              "| method | value projections | mean cosine | nn top-1 | nn top-10 overlap | quantize s | value s |",
              "|---|---|---|---|---|---|---|"]
    for r in result["records"]:
        for key, label in (("layerwise", "layer-wise loss"), ("mixed_values", "attention-mixed loss")):
            m = r[key]
            secs = f"{r['value_seconds']:.1f}" if key == "mixed_values" else "-"
            lines.append(f"| {r['method']} | {label} | {m['mean_cosine']:.4f} +- {m['mean_cosine_se']:.4f} | "
                         f"{m['nn_top1']:.3f} +- {m['nn_top1_se']:.3f} | {m['nn_top10_overlap']:.3f} +- "
                         f"{m['nn_top10_overlap_se']:.3f} | {r['seconds']:.1f} | {secs} |")
    lines += ["", "Mixed loss of each value projection (the loss the next layer sees), for the layer-wise rounding "
              "and for the rounding solved on it:", "",
              "| method | layer | layer-wise rounding | mixed rounding |", "|---|---|---|---|"]
    for r in result["records"]:
        for row in r["layers"]:
            lines.append(f"| {r['method']} | {row['layer']} | {row['mixed loss, layer-wise rounding']:.4g} | "
                         f"{row['mixed loss, mixed rounding']:.4g} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    return cli(__doc__, run, Path("benchmarks/results/minilm_value_mixing"), "+", argv)


if __name__ == "__main__":
    raise SystemExit(main())
