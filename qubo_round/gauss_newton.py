"""The Kronecker factors of the Gauss-Newton loss of a model's output, per Linear layer.

For a Linear layer ``y = W x`` inside a model with output ``f`` (a tensor), a weight error ``dW``
changes ``f`` by ``J dW x`` (``J = df / dy`` at that token), so the squared output error of the
rounding is ``E[||J dW x||^2]`` to second order. K-FAC (Martens and Grosse 2015) factors it as
``tr(G dW H dW^T)`` (:class:`~qubo_round.kronecker.KroneckerLoss`) with::

    G = E[J^T J]   (rows, rows),      H = E[x x^T]   (cols, cols)

both over the same token positions. ``J^T J`` is estimated with ``probes`` random directions
``r ~ N(0, I)`` of the output (``E[J^T r r^T J] = J^T J``): one backward pass of ``(f * r).sum()``
per probe and batch gives ``g = J^T r`` at every layer's output at once. For a normalised sentence
embedding ``f`` (MiniLM), ``||df||^2 / 2`` is ``1 - cos`` to second order: ``G`` weighs each output
direction of the layer by how much it moves the embedding.

Every position of a layer's input counts (as in :mod:`qubo_round.stats`); the float network's
inputs (layer-wise reconstruction; under asymmetric reconstruction the pipeline takes ``H_hat`` of
the quantized network's inputs instead, :func:`qubo_round.kronecker.asymmetric_target`).

A few probes per sentence make the off-diagonal entries of ``G`` noisy, and a descent that couples
rows through them follows the noise (on MiniLM the unshrunk estimate from 4 probes lowered the W3
cosine: ``benchmarks/results/minilm_ablation.md``). With
``shrink`` the estimate is shrunk toward its own diagonal,
``G = (1 - alpha) G_hat + alpha diag(G_hat)``, by the weight that minimises the expected squared
(Frobenius) error of the off-diagonal entries (Ledoit and Wolf 2004; Schafer and Strimmer 2005,
target D)::

    alpha = sum_{i != j} Var(G_hat_ij) / sum_{i != j} G_hat_ij^2                (clipped to [0, 1])

with ``Var(G_hat_ij)`` the sample variance of the mean over the samples ``M_s = sum_t g_t g_t^T``,
one per probe and sentence (the leading index of the layer's output; its other positions, the
tokens, share the sentence's probe). ``||M_s||_F^2`` is the squared Frobenius norm of the small
token Gram ``g_s g_s^T`` (tokens x tokens per sentence), not of the (out, out) matrix itself.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from .kronecker import KroneckerLoss
from .stats import _call, iterate_batches

log = logging.getLogger(__name__)

__all__ = ["kronecker_factors"]


def _output(out, model: nn.Module) -> torch.Tensor:
    if isinstance(out, (tuple, list)) and out:
        out = out[0]
    if not isinstance(out, torch.Tensor) or not out.is_floating_point():
        raise ValueError(f"the Gauss-Newton output loss needs a model whose output (or its first element) is a "
                         f"float tensor; {type(model).__name__} returned {type(out).__name__}; "
                         "use output_loss='none'")
    return out


def _shrinkage(S: torch.Tensor, n: int, offdiag2: float) -> float:
    """The weight ``alpha`` of the diagonal target (module docstring) for ``n`` samples ``M_s`` with
    sum ``S`` and ``offdiag2 = sum_s ||offdiag(M_s)||_F^2``; 0 where it cannot be estimated
    (fewer than two samples, or no off-diagonal mass)."""
    if n < 2:
        return 0.0
    A = S / n
    off = float(A.pow(2).sum() - torch.diagonal(A).pow(2).sum())
    if not off > 0:
        return 0.0
    var = (offdiag2 - n * off) / (n * (n - 1))
    return min(1.0, max(0.0, var / off))


def kronecker_factors(model: nn.Module, names: list[str], data, *, probes: int = 4,
                      seed: int = 0, shrink: bool = True) -> dict[str, KroneckerLoss]:
    """``{name: KroneckerLoss(G, H)}`` (float64) of the given ``nn.Linear`` layers of ``model``.

    Args:
        model: the float network (its parameters and their ``grad`` are not changed: the graph is
            built through them, the gradients are taken at the layers' outputs only).
        names: Linear layer names; data: calibration batches (as :func:`~qubo_round.stats.iterate_batches`).
        probes: random output directions per batch (more: a less noisy ``G``, one backward pass each).
        seed: the probes' generator seed.
        shrink: ``G`` shrunk toward its diagonal by the estimated weight (module docstring; the
            weight is each loss's ``shrinkage``); False: the probe average as it is.
    """
    if isinstance(probes, bool) or not isinstance(probes, int) or probes < 1:
        raise ValueError(f"probes must be a positive integer, got {probes!r}")
    mods = dict(model.named_modules())
    for n in names:
        if not isinstance(mods.get(n), nn.Linear):
            raise ValueError(f"layer {n!r} is a {type(mods.get(n)).__name__}, not nn.Linear: the Kronecker "
                             "output loss is built for Linear layers")
    G = {n: torch.zeros(mods[n].out_features, mods[n].out_features, dtype=torch.float64) for n in names}
    H = {n: torch.zeros(mods[n].in_features, mods[n].in_features, dtype=torch.float64) for n in names}
    count = dict.fromkeys(names, 0)
    samples = dict.fromkeys(names, 0)
    offdiag2 = dict.fromkeys(names, 0.0)  # sum over the samples M_s of ||offdiag(M_s)||_F^2
    outs: dict[str, list[torch.Tensor]] = {n: [] for n in names}

    def hook(n):
        def h(_m, inputs, out):
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1])
            H[n] += (x.T @ x).double()
            count[n] += x.shape[0]
            if out.requires_grad:
                outs[n].append(out)
        return h

    gen = torch.Generator().manual_seed(seed)
    handles = [mods[n].register_forward_hook(hook(n)) for n in names]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(True)  # a graph through the float network (no parameter gradient is formed)
        with torch.enable_grad():
            for batch in iterate_batches(data):
                f = _output(_call(model, batch), model)
                at = [(n, t) for n, o in outs.items() for t in o]
                acc = {n: None for n, _ in at}  # this batch's sum of g^T g, in the model's precision
                for k in range(probes):
                    r = torch.randn(f.shape, generator=gen, dtype=f.dtype).to(f.device)
                    grads = torch.autograd.grad((f * r).sum(), [t for _, t in at], retain_graph=k < probes - 1,
                                                allow_unused=True)
                    for (n, t), g in zip(at, grads):
                        if g is not None:  # None: this call of the layer does not reach the output
                            if shrink:
                                o2, m = _offdiag2(g)
                                offdiag2[n] += o2
                                samples[n] += m
                            g = g.reshape(-1, t.shape[-1])
                            acc[n] = g.T @ g if acc[n] is None else acc[n].addmm_(g.T, g)
                for n, a in acc.items():
                    if a is not None:
                        G[n] += a.double()  # one conversion per batch and layer
                for o in outs.values():
                    o.clear()
    finally:
        for h in handles:
            h.remove()
        for p, req in flags:
            p.requires_grad_(req)
    missing = [n for n in names if count[n] == 0]
    if missing:
        raise ValueError(f"layer(s) {missing} were never executed on the calibration data")
    log.info("Gauss-Newton factors of %d layer(s) from %d probe(s) per batch", len(names), probes)
    out = {}
    for n in names:
        alpha = _shrinkage(G[n], samples[n], offdiag2[n]) if shrink else 0.0
        g = (1 - alpha) * G[n] + alpha * torch.diag(torch.diagonal(G[n])) if alpha else G[n]
        log.debug("layer %s: G shrunk toward its diagonal by %.3f", n, alpha)
        out[n] = KroneckerLoss((g / (count[n] * probes)).numpy(), (H[n] / count[n]).numpy(), shrinkage=alpha)
    return out


def _offdiag2(g: torch.Tensor) -> tuple[float, int]:
    """``(sum_s ||offdiag(M_s)||_F^2, number of samples)`` of one probe's gradients ``g`` at a layer's
    output (samples s: the leading index where ``g`` has three or more dimensions, else its rows),
    from the token Grams."""
    gs = g.reshape(g.shape[0], -1, g.shape[-1]) if g.dim() >= 3 else g.reshape(-1, 1, g.shape[-1])
    gram = torch.bmm(gs, gs.transpose(1, 2)).double()  # ||M_s||_F^2 = ||g_s g_s^T||_F^2
    return float(gram.pow(2).sum() - gs.pow(2).sum(1).double().pow(2).sum()), gs.shape[0]
