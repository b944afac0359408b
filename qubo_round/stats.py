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

from .layers import get_layer

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

    def _mean(self, S: torch.Tensor, symmetric: bool = False) -> np.ndarray:
        if self.count == 0:
            raise ValueError("no calibration samples were accumulated (empty calibration data)")
        if symmetric:
            # BLAS need not return x @ x.T bit-symmetric (blocked kernels sum the two triangles in
            # different orders on some CPUs); (S + S^T) / 2 is, since a + b == b + a exactly
            S = (S + S.T) / 2.0
        return (S / self.count).cpu().numpy()

    @property
    def H(self) -> np.ndarray:
        """(cols, cols) float64 ``E[x x^T]``, exactly symmetric."""
        return self._mean(self._S, symmetric=True)

    @property
    def H_hat(self) -> np.ndarray:
        """(cols, cols) float64 ``E[x_hat x_hat^T]``, exactly symmetric."""
        if not self.asymmetric:
            raise ValueError("H_hat was not accumulated; create the accumulator with asymmetric=True")
        return self._mean(self._S_hat, symmetric=True)

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
    """Statistics of one layer: one accumulator per group, or, with ``row_blocks`` k > 1, one per
    block of ``rows / k`` consecutive rows of its single weight group (the heads of an attention
    value projection, :mod:`qubo_round.attention`)."""

    name: str
    groups: list[CovarianceAccumulator]
    row_blocks: int = 1

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


def _call(model: nn.Module, batch):
    """``model``'s output on one batch (a dict: keyword arguments)."""
    return model(**batch) if isinstance(batch, dict) else model(batch)


class _StopForward(BaseException):
    """Raised by a hook to end a forward pass once every statistic it was run for is captured.

    A ``BaseException`` (like ``GeneratorExit``), so a model's own ``except Exception`` cannot
    swallow it."""


def _call_until_stopped(model: nn.Module, batch) -> None:
    try:
        _call(model, batch)
    except _StopForward:
        pass


def _storage_key(t: torch.Tensor) -> tuple[int, int]:
    st = t.untyped_storage()
    return st.data_ptr(), st.nbytes()


class FloatInputs:
    """Inputs of the float network's layers on the calibration batches, captured once for a run.

    The float network never changes while a network is quantized layer by layer, so the inputs
    ``x`` of its layers are the same in every pass: one float pass captures the inputs of many
    layers, and the asymmetric statistics of each layer then need only the pass of the partly
    quantized network (which :func:`capture_stats` also ends right after the layer). The inputs
    are held as references to the tensors the forward pass produced, no copies (a tensor read by
    several layers, such as the input of attention's query, key and value projections, is held
    once). Results are identical to a float pass per layer: the same tensors, the same
    arithmetic.

    Memory: at most ``budget_bytes`` (counted per storage). A pass keeps the layers, in the
    order given, whose inputs fit; the next layer not kept starts a new pass when it is needed.
    When not even the first layer of a pass fits, caching stops for the rest of the run and
    :func:`capture_stats` runs the float network next to the quantized one, batch by batch.
    A held tensor that the forward pass modified in place after the layer read it (its version
    counter moved) is not used: that layer is captured batch by batch too.

    Args:
        model: the float network (unchanged during the run).
        layer_names: the layers whose inputs will be asked for, in execution order.
        batches: the calibration batches (a list, in the order :func:`capture_stats` gets them).
        budget_bytes: bound on the held inputs.
    """

    def __init__(self, model: nn.Module, layer_names: list[str], batches: list, budget_bytes: float) -> None:
        self.model = model
        self.names = list(layer_names)
        self.batches = list(batches)
        self.budget = float(budget_bytes)
        self.passes = 0
        self.enabled = True
        self._store: dict[str, list[list[tuple[torch.Tensor, int]]]] = {}

    def discard(self, name: str) -> None:
        """Free the inputs of ``name`` (a layer that will not be asked for: skipped, resumed)."""
        self._store.pop(name, None)

    def held_bytes(self, names=None) -> int:
        seen: dict[int, int] = {}
        for n in (self._store if names is None else names):
            for calls in self._store.get(n, ()):
                for t, _ in calls:
                    ptr, nb = _storage_key(t)
                    seen[ptr] = nb
        return sum(seen.values())

    def take(self, name: str) -> list[list[torch.Tensor]] | None:
        """The float inputs of ``name``: per batch, one tensor per call of the layer (usually one);
        None when they are not cached (the caller then runs the float network itself)."""
        if name not in self._store and self.enabled and name in self.names:
            self._fill(self.names.index(name))
        held = self._store.pop(name, None)
        if held is None:
            return None
        if any(t._version != v for calls in held for t, v in calls):
            log.info("layer %s: its input was modified in place after the layer read it; "
                     "capturing it batch by batch instead", name)
            return None
        return [[t for t, _ in calls] for calls in held]

    def _fill(self, start: int) -> None:
        window = [n for n in self.names[start:] if n not in self._store]
        store: dict[str, list] = {n: [] for n in window}
        current: dict[str, list] = {}
        mods = {n: get_layer(self.model, n).module for n in window}

        def hook(name: str):
            def h(_mod, inputs, _out):
                if name in current:
                    x = inputs[0].detach()
                    current[name].append((x, x._version))
            return h

        handles = [mods[n].register_forward_hook(hook(n)) for n in window]
        self.passes += 1
        try:
            with torch.no_grad():
                for batch in self.batches:
                    current.clear()
                    current.update({n: [] for n in window})
                    _call(self.model, batch)
                    for n in window:
                        store[n].append(current[n])
                    self._store.update(store)  # counted with what is already held
                    while window and self.held_bytes() > self.budget:
                        self._store.pop(window[-1], None)
                        del store[window[-1]]
                        window.pop()
                    if not window:
                        break
        finally:
            current.clear()
            for h in handles:
                h.remove()
        if not window:
            self.enabled = False
            log.info("the float inputs of layer %s alone exceed the budget of %.0f MB: running the float "
                     "network next to the quantized one for each layer", self.names[start], self.budget / 2**20)
            return
        log.info("float inputs of %d layer(s) from %s captured in one pass (%.0f MB)", len(window), window[0],
                 self.held_bytes(window) / 2**20)


_PLAIN = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device)


def _tensors(obj) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


def _plain_output(obj) -> bool:
    """A tensor, or tuples of tensors and plain values: safe to hand out again (a list, a dict or
    any other object could be changed by its receiver)."""
    if isinstance(obj, (torch.Tensor, _PLAIN)):
        return True
    return type(obj) is tuple and all(_plain_output(o) for o in obj)


def _snapshot(obj):
    """The containers of an argument copied (their caller may change them later); tensors and
    other objects as they are (tensors are checked by their version counters, other objects by
    identity)."""
    if type(obj) in (tuple, list):
        return type(obj)(_snapshot(o) for o in obj)
    if type(obj) is dict:
        return {k: _snapshot(v) for k, v in obj.items()}
    return obj


def _same_value(a, b) -> bool:
    """``a`` (held) and ``b`` (now) are the same argument: tensors equal bit for bit, with the same
    dtype, shape, layout and device; plain values equal; containers element by element; any
    other object only if it is the same object."""
    if isinstance(a, torch.Tensor):
        return (isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape
                and a.device == b.device and a.layout == b.layout and a.layout == torch.strided
                and a.stride() == b.stride() and (a is b or bool(torch.equal(a, b))))
    if type(a) is not type(b):
        return False
    if isinstance(a, _PLAIN):
        return a == b
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)
    return a is b


@dataclass
class _Entry:
    args: tuple
    kwargs: dict
    out: object
    versions: list[tuple[torch.Tensor, int]]  # every held tensor (inputs and output), its version

    def replays(self, args, kwargs) -> bool:
        return (all(t._version == v for t, v in self.versions) and _same_value(self.args, args)
                and _same_value(self.kwargs, kwargs))


class FinishedOutputs:
    """Replays the outputs of the partly quantized network's finished submodules.

    While a network is quantized layer by layer, a submodule none of whose layers will change any
    more (all quantized and applied, skipped, or none to quantize, such as the embeddings or a
    finished transformer block) computes, in the pass of every later layer, the same function of
    the same arguments. Its output on each batch is held (per batch and call) with its arguments,
    and handed out again when the arguments are the same tensors, bit for bit (same dtype, shape
    and strides), instead of being recomputed: a pass for a layer of block ``b`` runs only block
    ``b``. Results are identical to recomputing, for submodules whose output is a function of
    their arguments, parameters and buffers (true of the usual layers in eval mode; a module that
    reads other state, or draws random numbers, would need ``budget_bytes=0``, which holds
    nothing). Only the largest finished submodules that have a forward of their own are wrapped
    (containers such as ``ModuleList`` are looked into), the root never; outputs other than
    tensors and tuples/lists of them are not held, nor is anything whose tensors were changed in
    place since (their version counters moved). Bounded by ``budget_bytes`` (counted per storage);
    beyond it, outputs are computed as usual. Active only inside :func:`capture_stats`.

    Args:
        model: the partly quantized network (its ``forward`` methods are wrapped until
            :meth:`close`).
        pending: the layers that will still change (quantized later in the run).
        budget_bytes: bound on the held arguments and outputs.
    """

    def __init__(self, model: nn.Module, pending: Iterable[str], budget_bytes: float) -> None:
        self.model = model
        self.pending = set(pending)
        self.budget = float(budget_bytes)
        self.hits = self.misses = 0
        self._wrapped: dict[str, nn.Module] = {}
        self._entries: dict[tuple[str, int, int], _Entry] = {}
        self._active = False
        self._batch = 0
        self._calls: dict[str, int] = {}
        self._storages: dict[int, int] = {}
        self._update()

    # ------------------------------------------------------------------ which modules
    def finish(self, name: str) -> None:
        """Layer ``name`` is final (quantized and applied): it will not change any more."""
        self.pending.discard(name)
        self._update()

    def _update(self) -> None:
        want: dict[str, nn.Module] = {}
        # every module that contains a pending layer (or is one)
        holds_pending = {""} if self.pending else set()
        for p in self.pending:
            parts = p.split(".")
            holds_pending.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))

        def visit(prefix: str, mod: nn.Module, root: bool) -> None:
            own_forward = type(mod).forward is not nn.Module.forward
            if not root and prefix not in holds_pending and own_forward:
                want[prefix] = mod
                return
            for child_name, child in mod.named_children():
                visit(f"{prefix}.{child_name}" if prefix else child_name, child, False)

        visit("", self.model, True)
        for name in [n for n in self._wrapped if n not in want]:
            self._unwrap(name)
        for name, mod in want.items():
            if name not in self._wrapped:
                self._wrap(name, mod)

    def _wrap(self, name: str, mod: nn.Module) -> None:
        original = mod.forward  # the bound method of the class

        def forward(*args, **kwargs):
            if not self._active:
                return original(*args, **kwargs)
            call = self._calls.get(name, 0)
            self._calls[name] = call + 1
            key = (name, self._batch, call)
            entry = self._entries.get(key)
            if entry is not None and entry.replays(args, kwargs):
                self.hits += 1
                return entry.out
            self.misses += 1
            out = original(*args, **kwargs)
            self._hold(key, args, kwargs, out)
            return out

        mod.forward = forward
        self._wrapped[name] = mod

    def _unwrap(self, name: str) -> None:
        mod = self._wrapped.pop(name)
        if "forward" in vars(mod):
            del mod.forward
        for key in [k for k in self._entries if k[0] == name]:
            del self._entries[key]
        self._recount()

    def close(self) -> None:
        """Restore every ``forward`` and free what is held."""
        for name in list(self._wrapped):
            self._unwrap(name)
        self._entries.clear()
        self._storages.clear()

    # ------------------------------------------------------------------ what is held
    def _recount(self) -> None:
        self._storages = {}
        for e in self._entries.values():
            for t, _ in e.versions:
                ptr, nb = _storage_key(t)
                self._storages[ptr] = nb

    def held_bytes(self) -> int:
        return sum(self._storages.values())

    def _hold(self, key, args, kwargs, out) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._recount()
        if not _plain_output(out):
            return
        tensors = _tensors(args) + _tensors(kwargs) + _tensors(out)
        new = {}
        for t in tensors:
            if t.layout != torch.strided:
                return
            ptr, nb = _storage_key(t)
            if ptr not in self._storages:
                new[ptr] = nb
        if self.held_bytes() + sum(new.values()) > self.budget:
            return
        self._storages.update(new)
        self._entries[key] = _Entry(_snapshot(args), _snapshot(kwargs), out,
                                    [(t, t._version) for t in tensors])

    # ------------------------------------------------------------------ used by capture_stats
    def _begin(self, batch_index: int) -> None:
        self._batch = batch_index
        self._calls = {}
        self._active = True

    def _end(self) -> None:
        self._active = False


def capture_stats(model: nn.Module, layer_names: list[str], data, *,
                  model_hat: nn.Module | None = None,
                  float_inputs: FloatInputs | None = None,
                  replay: FinishedOutputs | None = None) -> dict[str, LayerStats]:
    """Stream ``H`` (and ``H_hat``, ``C`` when ``model_hat`` is given) for the named layers.

    Args:
        model: the float network.
        layer_names: names of supported layers (``model.named_modules()`` names).
        data: calibration inputs: a tensor (N, ...), a DataLoader, or an iterable of batches
            (tensors or dicts of tensors).
        model_hat: a copy of the network with some layers quantized, fed the same batches; it
            must have the same layer names. Its forward pass on a batch ends as soon as every
            named layer has read its input.
        float_inputs: the float inputs of the layers, captured for the whole run on the same
            batches; layers it does not hold run the float network (without ``model_hat``: when
            it holds every named layer, no forward pass runs at all).
        replay: the finished submodules of ``model_hat``, whose outputs are replayed (asymmetric
            statistics only; ``data`` must be the same batches, in the same order, every time).

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
    if asym:
        return _capture_asymmetric(model, model_hat, adapters, adapters_hat, stats, data, float_inputs, replay)
    def add(name: str, x: torch.Tensor) -> None:
        cols = adapters[name].unfold_input(x)
        for g, acc in enumerate(stats[name].groups):
            acc.add_batch(cols[g], where=f"layer {name!r}")

    cached = {n: float_inputs.take(n) for n in layer_names} if float_inputs is not None else {}
    if cached and all(c is not None for c in cached.values()):
        # the float inputs are held for the run: no forward pass at all
        for n, per_batch in cached.items():
            for calls in per_batch:
                for x in calls:
                    add(n, x)
        return _checked(stats, len(next(iter(cached.values()))))

    def float_hook(name: str):
        def hook(_mod, inputs, _out):
            add(name, inputs[0])
        return hook

    handles = [adapters[n].module.register_forward_hook(float_hook(n)) for n in layer_names]
    n_batches = 0
    try:
        with torch.no_grad():
            for batch in iterate_batches(data):
                _call(model, batch)
                n_batches += 1
    finally:
        for h in handles:
            h.remove()
    return _checked(stats, n_batches)


def _checked(stats: dict[str, LayerStats], n_batches: int) -> dict[str, LayerStats]:
    if n_batches == 0:
        raise ValueError("calibration data is empty (the iterable yielded no batch)")
    for n, st in stats.items():
        if st.count == 0:
            raise ValueError(f"layer {n!r} was never executed on the calibration data; "
                             "is it used in the model's forward pass?")
    log.info("captured statistics of %d layer(s) from %d batch(es)", len(stats), n_batches)
    return stats


def _capture_asymmetric(model, model_hat, adapters, adapters_hat, stats, data, float_inputs, replay):
    """Per batch: the float inputs of every layer (held by ``float_inputs`` or captured by a float
    pass), then the pass of ``model_hat``, whose hooks accumulate at once and end it after the
    last call of the last layer needed."""
    names = list(adapters)
    cached = {n: float_inputs.take(n) for n in names} if float_inputs is not None else {}
    lockstep = [n for n in names if cached.get(n) is None]
    unfolded = set(lockstep)  # their xs hold float64 columns per group; the others raw inputs
    xs: dict[str, list[torch.Tensor]] = {}  # this batch's float inputs, per call
    calls: dict[str, int] = {}
    remaining = [0]

    def float_hook(name: str):
        def hook(_mod, inputs, _out):
            # converted at once, group by group as add_batch would: an in-place change to the
            # input later in the forward pass cannot reach the statistics
            cols = adapters[name].unfold_input(inputs[0])
            xs[name].append([c.detach().to(torch.float64) for c in cols])
        return hook

    def hat_hook(name: str):
        ad, ad_hat = adapters[name], adapters_hat[name]

        def hook(_mod, inputs, _out):
            c = calls[name]
            calls[name] = c + 1
            if c >= len(xs[name]):
                raise ValueError(f"layer {name!r} is called more often by the quantized network than by "
                                 f"the float network ({len(xs[name])} time(s)) on the same batch")
            cols = xs[name][c] if name in unfolded else ad.unfold_input(xs[name][c])
            cols_hat = ad_hat.unfold_input(inputs[0])
            for g, acc in enumerate(stats[name].groups):
                acc.add_batch(cols[g], cols_hat[g], where=f"layer {name!r}")
            remaining[0] -= 1
            if remaining[0] == 0:
                raise _StopForward
        return hook

    handles = [adapters[n].module.register_forward_hook(float_hook(n)) for n in lockstep]
    handles += [adapters_hat[n].module.register_forward_hook(hat_hook(n)) for n in names]
    n_batches = 0
    try:
        with torch.no_grad():
            for b, batch in enumerate(iterate_batches(data)):
                for n in names:
                    if n in lockstep:
                        xs[n] = []
                    else:
                        if b >= len(cached[n]):
                            raise ValueError("capture_stats got more batches than float_inputs holds")
                        xs[n] = cached[n][b]
                    calls[n] = 0
                if lockstep:
                    _call(model, batch)
                remaining[0] = sum(len(v) for v in xs.values())
                if remaining[0]:
                    if replay is not None:
                        replay._begin(b)
                    try:
                        _call_until_stopped(model_hat, batch)
                    finally:
                        if replay is not None:
                            replay._end()
                for n in names:
                    if calls[n] != len(xs[n]):
                        raise ValueError(f"layer {n!r} is called {calls[n]} time(s) by the quantized network "
                                         f"but {len(xs[n])} time(s) by the float network on the same batch")
                xs.clear()
                n_batches += 1
    finally:
        xs.clear()
        for h in handles:
            h.remove()
    if float_inputs is not None and n_batches and any(len(cached[n]) != n_batches for n in names if n in cached
                                                      and cached[n] is not None):
        raise ValueError("capture_stats got fewer batches than float_inputs holds")
    return _checked(stats, n_batches)
