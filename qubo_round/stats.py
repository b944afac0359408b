"""Streaming calibration statistics, memory O(cols^2) whatever the amount of data.

For each layer group, with input columns ``x`` (float network) and ``x_hat`` (network whose
earlier layers are quantized), accumulated in float64::

    H     = E[x x^T]            (cols, cols)
    H_hat = E[x_hat x_hat^T]    (cols, cols)   asymmetric reconstruction only
    C     = E[x_hat x^T]        (cols, cols)   asymmetric reconstruction only
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .layers import LayerAdapter, get_layer

log = logging.getLogger(__name__)


class CovarianceAccumulator:
    """Running second moments of column samples; ``add_batch`` takes (cols, samples) tensors."""

    def __init__(self, cols: int, asymmetric: bool = False) -> None:
        self.cols = cols
        self.asymmetric = asymmetric
        self.count = 0
        self._S = torch.zeros(cols, cols, dtype=torch.float64)
        self._S_hat = torch.zeros(cols, cols, dtype=torch.float64) if asymmetric else None
        self._C = torch.zeros(cols, cols, dtype=torch.float64) if asymmetric else None

    def _to(self, device: torch.device) -> None:
        """Keep the sums on the device of the data (a GPU accumulates on the GPU)."""
        if self._S.device != device:
            self._S = self._S.to(device)
            self._S_hat = None if self._S_hat is None else self._S_hat.to(device)
            self._C = None if self._C is None else self._C.to(device)

    def add_batch(self, x: torch.Tensor, x_hat: torch.Tensor | None = None, where: str = "") -> None:
        """Add column samples ``x`` (cols, m) (and ``x_hat`` (cols, m) when asymmetric)."""
        x = x.detach().to(torch.float64)
        if x.shape[0] != self.cols:
            raise ValueError(f"{where}: input has {x.shape[0]} features, expected {self.cols}")
        _check_finite(x, where, "input activations")
        if self.asymmetric:  # validate everything before touching the sums
            if x_hat is None:
                raise ValueError(f"{where}: asymmetric statistics need x_hat for every batch")
            x_hat = x_hat.detach().to(x.device, torch.float64)
            if x_hat.shape != x.shape:
                raise ValueError(f"{where}: x_hat has shape {tuple(x_hat.shape)}, x has {tuple(x.shape)}")
            _check_finite(x_hat, where, "inputs from the quantized network")
        self._to(x.device)
        self._S += x @ x.T
        if self.asymmetric:
            self._S_hat += x_hat @ x_hat.T
            self._C += x_hat @ x.T
        self.count += x.shape[1]

    def _mean(self, S: torch.Tensor) -> np.ndarray:
        if self.count == 0:
            raise ValueError("no calibration samples were accumulated (empty calibration data)")
        return (S / self.count).cpu().numpy()

    @property
    def H(self) -> np.ndarray:
        """(cols, cols) float64 ``E[x x^T]``."""
        return self._mean(self._S)

    @property
    def H_hat(self) -> np.ndarray:
        """(cols, cols) float64 ``E[x_hat x_hat^T]``."""
        if not self.asymmetric:
            raise ValueError("H_hat was not accumulated; create the accumulator with asymmetric=True")
        return self._mean(self._S_hat)

    @property
    def C(self) -> np.ndarray:
        """(cols, cols) float64 ``E[x_hat x^T]``."""
        if not self.asymmetric:
            raise ValueError("C was not accumulated; create the accumulator with asymmetric=True")
        return self._mean(self._C)


def _check_finite(x: torch.Tensor, where: str, what: str) -> None:
    if not torch.isfinite(x).all():
        raise ValueError(f"{where}: non-finite {what} (NaN or inf) in the calibration batch; "
                         "check the calibration data and the preceding layers")


@dataclass
class LayerStats:
    """Statistics of one layer: one accumulator per group."""

    name: str
    groups: list[CovarianceAccumulator]

    @property
    def count(self) -> int:
        return self.groups[0].count


def iterate_batches(data) -> Iterable:
    """Yield model inputs from a tensor (split in batches of 64), a DataLoader or any iterable.

    Items that are (inputs, labels) tuples or lists yield their first element.
    """
    if isinstance(data, torch.Tensor):
        if data.shape[0] == 0:
            raise ValueError("calibration data is empty (0 samples); pass at least one input")
        yield from torch.split(data, 64)
        return
    for item in data:
        yield item[0] if isinstance(item, (tuple, list)) else item


def _call(model: nn.Module, batch) -> None:
    if isinstance(batch, dict):
        model(**batch)
    else:
        model(batch)


def capture_stats(model: nn.Module, layer_names: list[str], data, *,
                  model_hat: nn.Module | None = None) -> dict[str, LayerStats]:
    """Stream ``H`` (and ``H_hat``, ``C`` when ``model_hat`` is given) for the named layers.

    Args:
        model: the float network.
        layer_names: names of supported layers (``model.named_modules()`` names).
        data: calibration inputs: a tensor (N, ...), a DataLoader, or an iterable of batches
            (tensors or dicts of tensors).
        model_hat: a copy of the network with some layers quantized, fed the same batches; it
            must have the same layer names.

    Returns:
        name -> :class:`LayerStats`.
    """
    if not layer_names:
        raise ValueError("no layer names given")
    adapters = {n: get_layer(model, n) for n in layer_names}
    adapters_hat = {n: get_layer(model_hat, n) for n in layer_names} if model_hat is not None else {}
    asym = model_hat is not None
    stats = {n: LayerStats(n, [CovarianceAccumulator(a.cols, asym) for _ in range(a.groups)])
             for n, a in adapters.items()}
    pending: dict[str, torch.Tensor] = {}

    def float_hook(name: str, ad: LayerAdapter):
        def hook(_mod, inputs, _out):
            cols = ad.unfold_input(inputs[0])
            if asym:
                pending[name] = cols
            else:
                for g, acc in enumerate(stats[name].groups):
                    acc.add_batch(cols[g], where=f"layer {name!r}")
        return hook

    def hat_hook(name: str, ad: LayerAdapter):
        def hook(_mod, inputs, _out):
            cols_hat = ad.unfold_input(inputs[0])
            cols = pending.pop(name)
            for g, acc in enumerate(stats[name].groups):
                acc.add_batch(cols[g], cols_hat[g], where=f"layer {name!r}")
        return hook

    handles = [adapters[n].module.register_forward_hook(float_hook(n, adapters[n])) for n in layer_names]
    handles += [adapters_hat[n].module.register_forward_hook(hat_hook(n, adapters_hat[n]))
                for n in adapters_hat]
    n_batches = 0
    try:
        with torch.no_grad():
            for batch in iterate_batches(data):
                _call(model, batch)
                if asym:
                    _call(model_hat, batch)
                n_batches += 1
    finally:
        for h in handles:
            h.remove()
    if n_batches == 0:
        raise ValueError("calibration data is empty (the iterable yielded no batch)")
    for n, st in stats.items():
        if st.count == 0:
            raise ValueError(f"layer {n!r} was never executed on the calibration data; "
                             "is it used in the model's forward pass?")
    log.info("captured statistics of %d layer(s) from %d batch(es)", len(stats), n_batches)
    return stats
