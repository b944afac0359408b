"""Layer adapters: normalise Linear / Conv1d / Conv2d once to ``W[rows, cols]`` per group.

==============  ============================  =====================================
module          weight                         per group g (``G = groups``)
==============  ============================  =====================================
Linear          (out, in)                      W (out, in), G = 1
Conv1d          (out, in/G, k)                 W (out/G, in/G * k)
Conv2d          (out, in/G, kh, kw)            W (out/G, in/G * kh * kw)
==============  ============================  =====================================

The matching layer input columns ``x`` (cols,) come from :func:`unfold_input`: for a conv, one
column per output position (im2col), in the same (channel, kh, kw) order as the flattened kernel.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SUPPORTED = (nn.Linear, nn.Conv1d, nn.Conv2d)


def is_supported(module: nn.Module) -> bool:
    return type(module) in SUPPORTED


@dataclass(frozen=True)
class LayerAdapter:
    """View of one supported module as ``groups`` weight matrices ``W[rows, cols]``."""

    module: nn.Module
    name: str = ""

    def __post_init__(self) -> None:
        if not is_supported(self.module):
            raise TypeError(f"layer {self.name or type(self.module).__name__!r} of type "
                            f"{type(self.module).__name__} is not supported; supported: "
                            f"{', '.join(t.__name__ for t in SUPPORTED)}")

    @property
    def groups(self) -> int:
        return getattr(self.module, "groups", 1)

    @property
    def is_conv(self) -> bool:
        return isinstance(self.module, (nn.Conv1d, nn.Conv2d))

    @property
    def rows(self) -> int:
        """Output channels per group."""
        return self.module.weight.shape[0] // self.groups

    @property
    def cols(self) -> int:
        """Fan-in per group."""
        return int(np.prod(self.module.weight.shape[1:]))

    def weights(self) -> list[np.ndarray]:
        """One (rows, cols) float64 matrix per group."""
        w = self.module.weight.detach().to("cpu", torch.float64)
        w = w.reshape(self.groups, self.rows, self.cols)
        return [w[g].numpy().copy() for g in range(self.groups)]

    def write_back(self, W_hats: list[np.ndarray]) -> None:
        """Write one (rows, cols) matrix per group into ``module.weight`` (dtype and device kept)."""
        if len(W_hats) != self.groups:
            raise ValueError(f"{self.name}: expected {self.groups} group matrices, got {len(W_hats)}")
        for g, Wg in enumerate(W_hats):
            if np.shape(Wg) != (self.rows, self.cols):
                raise ValueError(f"{self.name}: group {g} has shape {np.shape(Wg)}, "
                                 f"expected {(self.rows, self.cols)}")
        weight = self.module.weight
        full = torch.as_tensor(np.stack(W_hats)).reshape(weight.shape)
        with torch.no_grad():
            weight.copy_(full.to(weight.dtype))

    def unfold_input(self, x: torch.Tensor) -> torch.Tensor:
        """Layer input ``x`` -> columns (groups, cols, samples), samples = batch * positions.

        Linear: x (..., in). Conv1d: x (N, C, L). Conv2d: x (N, C, H, W).
        """
        m = self.module
        if isinstance(m, nn.Linear):
            cols = x.reshape(-1, x.shape[-1]).T
            return cols.unsqueeze(0)
        if isinstance(m, nn.Conv1d):
            x = x.unsqueeze(-2)  # (N, C, 1, L)
            kernel, stride = (1, m.kernel_size[0]), (1, m.stride[0])
            dilation = (1, m.dilation[0])
            pad = _explicit_padding(m, [m.kernel_size[0]], [m.dilation[0]])
            pad2 = (pad[0], pad[1], 0, 0)
        else:
            kernel, stride, dilation = m.kernel_size, m.stride, m.dilation
            pad2 = _explicit_padding(m, list(m.kernel_size), list(m.dilation))
        if any(pad2):
            mode = "constant" if m.padding_mode == "zeros" else m.padding_mode
            x = F.pad(x, pad2, mode=mode)
        patches = F.unfold(x, kernel, dilation=dilation, stride=stride)  # (N, C*k, P)
        N, CK, P = patches.shape
        patches = patches.reshape(N, self.groups, CK // self.groups, P)
        return patches.permute(1, 2, 0, 3).reshape(self.groups, CK // self.groups, N * P)


def _explicit_padding(m: nn.Module, kernel: list[int], dilation: list[int]) -> tuple[int, ...]:
    """F.pad-style (last dim first) padding equivalent to the conv's ``padding``."""
    if isinstance(m.padding, str):
        if m.padding == "valid":
            return tuple(0 for _ in range(2 * len(kernel)))
        pads: list[int] = []
        for k, d in zip(reversed(kernel), reversed(dilation)):
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
        return tuple(pads)
    pads = []
    for p in reversed(m.padding):
        pads += [p, p]
    return tuple(pads)


def supported_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Named supported layers of ``model`` in registration order."""
    return {name: mod for name, mod in model.named_modules() if is_supported(mod)}


def get_layer(model: nn.Module, name: str) -> LayerAdapter:
    """Adapter of the layer ``name``; a clear error lists the supported names otherwise."""
    modules = dict(model.named_modules())
    if name not in modules:
        raise KeyError(f"no layer named {name!r} in the model; supported layers: "
                       f"{', '.join(supported_layers(model)) or '(none)'}")
    return LayerAdapter(modules[name], name)
