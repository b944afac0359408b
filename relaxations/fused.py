"""AdaRound's element-wise step work fused into two compiled kernels (``kernel="compiled"``).

A step of the relaxation is one matrix product and some 25 element-wise tensor operations over
the active ``(rows, amax)`` entries (rectified sigmoid, regulariser, chain rule, Adam). In eager
torch every one of them is a pass over memory; on MiniLM's 1536 x 384 layers they cost as much
as the product. ``torch.compile`` (inductor: generated, vectorised C++ on the CPU, Triton on a
GPU) fuses them into two loops:

* :func:`rectified_h` ``theta -> (sigmoid(theta), h)``: eq. 23,
  ``h = clip(sigmoid(theta) (zeta - gamma) + gamma, 0, 1)`` (the first step and after a compaction);
* :func:`adam_update` ``(theta, m, v, g_h, sigmoid(theta), ...) -> (theta', m', v', sigmoid(theta'), h')``:
  the regulariser's gradient ``-2 beta lam |2h - 1|^(beta - 2) (2h - 1)`` added to the loss
  gradient ``g_h``, the chain rule of eq. 23 (zero where clipped), one Adam step (the arithmetic
  of :class:`~.adam.Adam`) and the next step's ``h``.

The same formulas as the eager path, but fused code may round differently in the last bit
(vectorised transcendental functions, fused multiply-adds), so roundings can differ from the
eager kernel's on near-ties. Measured on 2 CPU cores (``benchmarks/adaround_throughput.py``,
README): 5-10% faster than eager with 1 thread, about 10% slower with 2. The step streams some
ten ``(rows, amax)`` tensors through memory either way, so on a CPU fusion saves little; on a
GPU, where each of the eager step's ~25 operations is a kernel launch, it is expected to pay
more (not measured: no GPU was available). The eager kernel stays the default. Shapes are dynamic (one
compilation serves every compaction of the active set); compilation takes a few seconds once per
process and needs a C++ compiler (CPU) or Triton (CUDA): :func:`check_compiled` says, before any
work, when it cannot run. Scalars enter as 0-dim tensors so that a changing ``beta`` or bias
correction does not recompile.
"""
from __future__ import annotations

import functools

import torch

from qubo_round.errors import first_line

__all__ = ["rectified_h", "adam_update", "kernels", "check_compiled"]


def rectified_h(theta: torch.Tensor, zg: torch.Tensor, gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sigmoid(theta), clip(sigmoid(theta) * zg + gamma, 0, 1))`` (eq. 23, ``zg = zeta - gamma``)."""
    sig = torch.sigmoid(theta)
    return sig, (sig * zg + gamma).clamp(0.0, 1.0)


def adam_update(theta, m, v, g_h, sig, zg, gamma, beta, reg, b1, b2, step, eps):
    """One fused step on the active entries; returns ``(theta', m', v', sig', h')``, the last
    two of ``theta'`` for the next step's product (one sigmoid per entry and step).

    Args (tensors of theta's shape, or 0-dim): ``g_h`` the loss gradient in ``h``; ``sig``
    ``sigmoid(theta)``; ``reg`` the regulariser's coefficient ``-2 beta lam`` (0 in the warm-up,
    where ``beta`` is any value >= 2); ``b1, b2`` Adam's betas, ``step`` ``lr sqrt(bc2) / bc1``
    and ``eps`` ``eps sqrt(bc2)``.
    """
    raw = sig * zg + gamma
    h = raw.clamp(0.0, 1.0)
    u = h * 2.0 - 1.0
    au, e = u.abs(), beta - 2.0
    # |u|^e as exp(e log|u|): vectorised exp and log, where pow with a tensor exponent is not
    # (0^e: 0 for e > 0, 1 for e = 0, as pow)
    g = g_h + reg * torch.where(au > 0, torch.exp(e * torch.log(au)), (e == 0).to(au.dtype)) * u
    g = torch.where(h == raw, g * sig * (1.0 - sig) * zg, torch.zeros_like(g))
    m2 = m + (1.0 - b1) * (g - m)  # torch.lerp(m, g, 1 - b1)
    v2 = v * b2 + (1.0 - b2) * g * g
    theta2 = theta - step * m2 / (v2.sqrt() + eps)
    sig2 = torch.sigmoid(theta2)
    return theta2, m2, v2, sig2, (sig2 * zg + gamma).clamp(0.0, 1.0)


@functools.lru_cache(maxsize=None)
def kernels() -> tuple:
    """The compiled ``(rectified_h, adam_update)``, made once per process (dynamic shapes)."""
    return (torch.compile(rectified_h, dynamic=True, fullgraph=True),
            torch.compile(adam_update, dynamic=True, fullgraph=True))


def check_compiled(device: torch.device, dtype: torch.dtype) -> None:
    """Compile and run both kernels on a tiny input of ``device`` and ``dtype``; a one-line
    error naming the cause when this machine cannot (no C++ compiler, no Triton)."""
    h_fn, step_fn = kernels()
    t = torch.zeros((2, 3), device=device, dtype=dtype)
    s = torch.tensor(0.5, device=device, dtype=dtype)
    try:
        h_fn(t, s, s)
        step_fn(t, t, t, t, t, s, s, s + 2.0, s, s, s, s, s)
    except Exception as e:  # inductor raises many types (compiler missing, backend errors)
        raise RuntimeError(f"kernel='compiled' cannot compile on this machine ({type(e).__name__}: "
                           f"{first_line(e)}); use kernel='eager'") from e
