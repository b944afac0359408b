"""The attention-mixed loss of self-attention value projections.

In self-attention the value projection's output is mixed over tokens by each head's attention
weights before anything else reads it: head ``h`` returns ``P_h (X W_h^T + b_h)`` (``P_h``
(tokens, tokens), ``X`` the value projection's input rows, ``W_h`` the head's rows of the
weight), so the error of rounding ``W_h`` that reaches the next layer is ``P_h X dW_h^T`` and its
loss ``tr(dW_h H_h dW_h^T)``, with the per-head *mixed* second moment::

    H_h = E[(P_h X)_t (P_h X)_t^T]          (cols, cols), one per head, float attention P_h

instead of the per-token ``H = E[x x^T]`` of the layer-wise QUBO (with asymmetric reconstruction,
``H_hat_h`` and ``C_h`` of ``P_h X_hat`` likewise, ``P_h`` always the float network's). The rows of
one head share ``H_h``: the layer's QUBO is one covariance QUBO per head (row block).

A *site* is a module with ``query``, ``key`` and ``value`` Linear children whose forward returns
``(context, attention weights)``, the weights (batch, heads, tokens, tokens), as the eager
attention of BERT-family models in ``transformers`` does. Every batch checks the identity the
loss rests on (``context`` equals ``P_h V_h`` per head); a module that does something else (rotary
values, grouped-query heads, a fused kernel without weights) is refused by name.

All query positions count, padding included, as in the per-token statistics of
:mod:`qubo_round.stats`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from .stats import CovarianceAccumulator, LayerStats, _call, _checked, iterate_batches

log = logging.getLogger(__name__)

#: Relative tolerance of the per-batch check ``context == P_h V_h``, relative to the largest
#: entry: the model's float32 products against a float64 recomputation (a module that mixes
#: otherwise differs at order 1).
IDENTITY_RTOL = 1e-3


@dataclass(frozen=True)
class AttentionSite:
    """A self-attention module ``attention`` and its value projection ``value`` (module names)."""

    attention: str
    value: str


def attention_sites(model: nn.Module) -> dict[str, AttentionSite]:
    """value projection name -> :class:`AttentionSite`, for every module of ``model`` with
    ``query``, ``key`` and ``value`` ``nn.Linear`` children (in module order)."""
    sites = {}
    for name, mod in model.named_modules():
        kids = dict(mod.named_children())
        if all(isinstance(kids.get(k), nn.Linear) for k in ("query", "key", "value")):
            value = f"{name}.value" if name else "value"
            sites[value] = AttentionSite(attention=name, value=value)
    return sites


class _Batch:
    """One batch's captures at a site: value inputs and outputs, attention contexts and weights
    (one entry per call)."""

    def __init__(self) -> None:
        self.x, self.v, self.ctx, self.p = [], [], [], []


def _weights(site: AttentionSite, out) -> tuple[torch.Tensor, torch.Tensor]:
    ok = isinstance(out, tuple) and len(out) >= 2 and isinstance(out[0], torch.Tensor)
    p = out[1] if ok else None
    if not isinstance(p, torch.Tensor) or p.dim() != 4:
        raise ValueError(f"attention module {site.attention!r} returned no attention weights (batch, heads, "
                         "tokens, tokens); value_loss='attention' needs eager attention (transformers: load "
                         "the model with attn_implementation='eager') or value_loss='token'")
    return out[0].detach(), p.detach()


def _mix(P: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``P_h X`` as (heads, cols, batch * tokens) float64: ``P`` (B, heads, T, T) float64, ``x`` (B, T, cols)."""
    B, heads, T, _ = P.shape
    return (P @ x.to(torch.float64)[:, None]).permute(1, 3, 0, 2).reshape(heads, x.shape[-1], B * T)


def _checked_weights(site: AttentionSite, x: torch.Tensor, v: torch.Tensor, ctx: torch.Tensor,
                     p: torch.Tensor) -> torch.Tensor:
    """The attention weights of one call as float64, after checking that they fit the value
    projection's input ``x`` and output ``v`` and that the module's context is ``P_h V_h`` per head."""
    B, T, heads = p.shape[0], p.shape[-1], p.shape[1]
    rows = v.shape[-1]
    if x.dim() != 3 or x.shape[:2] != (B, T) or p.shape != (B, heads, T, T) or rows % heads:
        raise ValueError(f"attention module {site.attention!r}: attention weights {tuple(p.shape)} do not fit the "
                         f"value projection's input {tuple(x.shape)} and output {tuple(v.shape)} "
                         "(batch, tokens, features); value_loss='attention' needs one weight matrix per head")
    P = p.to(torch.float64)
    dh = rows // heads
    want = P @ v.to(torch.float64).view(B, T, heads, dh).transpose(1, 2)  # (B, heads, T, dh)
    got = ctx.to(torch.float64).reshape(B, T, heads, dh).transpose(1, 2) if ctx.shape[-1] == rows else None
    scale = float(want.abs().max()) or 1.0
    if got is None or float((got - want).abs().max()) > IDENTITY_RTOL * scale:
        raise ValueError(f"attention module {site.attention!r}: its output is not P_h V_h per head (rotary or "
                         "grouped-query values, or another mixing); value_loss='attention' does not apply to it, "
                         "use value_loss='token'")
    return P


def capture_mixed_stats(model: nn.Module, sites: list[AttentionSite], data, *,
                        model_hat: nn.Module | None = None) -> dict[str, LayerStats]:
    """Stream the mixed ``H_h`` (and ``H_hat_h``, ``C_h`` when ``model_hat`` is given: the same
    float ``P_h`` applied to the inputs of ``model_hat``'s value projection) of the given sites.

    Returns value projection name -> :class:`LayerStats` whose ``groups`` are the heads, in row
    order (``row_blocks`` = heads: the accumulators split the single weight's rows, not its
    groups). One pass of ``model`` per batch, and one of ``model_hat``."""
    if not sites:
        raise ValueError("no attention sites given")
    asym = model_hat is not None
    mods = dict(model.named_modules())
    hat = dict(model_hat.named_modules()) if asym else {}
    stats: dict[str, LayerStats] = {}
    cur: dict[str, _Batch] = {}
    xhat: dict[str, list[torch.Tensor]] = {}

    def value_hook(site):
        def h(_m, inputs, out):
            cur[site.value].x.append(inputs[0].detach())
            cur[site.value].v.append(out.detach())
        return h

    def attention_hook(site):
        def h(_m, _inputs, out):
            ctx, p = _weights(site, out)
            cur[site.value].ctx.append(ctx)
            cur[site.value].p.append(p)
        return h

    def hat_hook(site):
        def h(_m, inputs, _out):
            xhat[site.value].append(inputs[0].detach())
        return h

    handles = []
    for s in sites:
        handles.append(mods[s.value].register_forward_hook(value_hook(s)))
        handles.append(mods[s.attention].register_forward_hook(attention_hook(s)))
        if asym:
            handles.append(hat[s.value].register_forward_hook(hat_hook(s)))
    n_batches = 0
    try:
        with torch.no_grad():
            for batch in iterate_batches(data):
                cur.update({s.value: _Batch() for s in sites})
                xhat.update({s.value: [] for s in sites})
                _call(model, batch)
                if asym:
                    _call(model_hat, batch)
                for s in sites:
                    _accumulate(s, cur[s.value], xhat[s.value] if asym else None, stats)
                cur.clear()
                xhat.clear()
                n_batches += 1
    finally:
        cur.clear()
        xhat.clear()
        for h in handles:
            h.remove()
    missing = [s.value for s in sites if s.value not in stats]
    if missing and n_batches:
        raise ValueError(f"layer(s) {missing} were never executed on the calibration data")
    return _checked(stats, n_batches)


def _accumulate(site: AttentionSite, b: _Batch, xhat: list[torch.Tensor] | None, stats: dict) -> None:
    calls = len(b.x)
    if calls != len(b.p) or (xhat is not None and len(xhat) != calls):
        raise ValueError(f"attention module {site.attention!r} and its value projection ran a different number of "
                         f"times in one pass ({len(b.p)} against {calls}{'' if xhat is None else f', {len(xhat)} in the quantized network'})")
    for c in range(calls):
        P = _checked_weights(site, b.x[c], b.v[c], b.ctx[c], b.p[c])
        M, Mh = _mix(P, b.x[c]), None
        if xhat is not None:
            if xhat[c].shape != b.x[c].shape:
                raise ValueError(f"layer {site.value!r}: input {tuple(xhat[c].shape)} in the quantized network, "
                                 f"{tuple(b.x[c].shape)} in the float one")
            Mh = _mix(P, xhat[c])
        if site.value not in stats:
            stats[site.value] = LayerStats(site.value, [CovarianceAccumulator(M.shape[1], xhat is not None)
                                                        for _ in range(M.shape[0])], row_blocks=M.shape[0])
        st = stats[site.value]
        if len(st.groups) != M.shape[0]:
            raise ValueError(f"attention module {site.attention!r}: {M.shape[0]} heads in one call, "
                             f"{len(st.groups)} in another")
        for h, acc in enumerate(st.groups):
            acc.add_batch(M[h], None if Mh is None else Mh[h], where=f"layer {site.value!r}, head {h}")
