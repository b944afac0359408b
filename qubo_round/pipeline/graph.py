"""Model structure: execution order of supported layers, batch-norm folding, following ReLUs."""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import is_supported
from ..stats import _call

log = logging.getLogger(__name__)

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def execution_order(model: nn.Module, batch) -> list[str]:
    """Names of supported layers in the order the forward pass first calls them."""
    order: list[str] = []
    handles = []
    for name, mod in model.named_modules():
        if is_supported(mod):
            handles.append(mod.register_forward_hook(
                lambda _m, _i, _o, name=name: order.append(name) if name not in order else None))
    try:
        with torch.no_grad():
            _call(model, batch)
    except Exception as e:  # the user's data does not fit the user's model
        raise ValueError(f"the calibration data does not fit the model: the forward pass failed with "
                         f"{type(e).__name__}: {e}") from e
    finally:
        for h in handles:
            h.remove()
    return order


def unsupported_layers(model: nn.Module, executed: list[str]) -> dict[str, str]:
    """Leaf modules that carry weights but are not quantized, with the reason."""
    out: dict[str, str] = {}
    for name, mod in model.named_modules():
        if next(mod.children(), None) is not None or not any(True for _ in mod.parameters(recurse=False)):
            continue
        if is_supported(mod):
            if name not in executed:
                out[name] = "not executed by the forward pass on the calibration data"
        elif isinstance(mod, _NORMS):
            continue  # folded, or kept in float as a normalisation layer
        else:
            out[name] = f"unsupported type {type(mod).__name__}"
    return out


def _fx_graph(model: nn.Module):
    try:
        return torch.fx.symbolic_trace(model)
    except Exception as e:  # dynamic control flow and friends
        log.warning("could not trace the model with torch.fx (%s: %s); batch-norm folding and "
                    "ReLU detection are skipped", type(e).__name__, e)
        return None


def fold_batchnorm(model: nn.Module) -> list[str]:
    """Fold every BatchNorm that directly follows a Conv/Linear (and is its only user) into it, in
    place, replacing the norm by Identity. Returns the folded norm names; unfoldable norms are logged."""
    gm = _fx_graph(model)
    norms = [n for n, m in model.named_modules() if isinstance(m, _NORMS)]
    if gm is None or not norms:
        return []
    modules = dict(model.named_modules())
    folded = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), _NORMS):
            continue
        src = node.args[0]
        if not (hasattr(src, "op") and src.op == "call_module" and is_supported(modules.get(src.target))
                and len(src.users) == 1):
            continue
        layer, bn = modules[src.target], modules[node.target]
        _fold(layer, bn)
        _set_module(model, node.target, nn.Identity())
        folded.append(node.target)
    left = sorted(set(norms) - set(folded))
    if left:
        log.warning("batch norm layer(s) not folded (no directly preceding conv/linear): %s", left)
    return folded


def _fold(layer: nn.Module, bn: nn.Module) -> None:
    with torch.no_grad():
        std = torch.sqrt(bn.running_var + bn.eps)
        gamma = bn.weight if bn.affine else torch.ones_like(std)
        beta = bn.bias if bn.affine else torch.zeros_like(std)
        factor = gamma / std
        shape = (-1,) + (1,) * (layer.weight.dim() - 1)
        layer.weight.mul_(factor.reshape(shape))
        bias = layer.bias if layer.bias is not None else torch.zeros_like(bn.running_mean)
        new_bias = (bias - bn.running_mean) * factor + beta
        if layer.bias is None:
            layer.bias = nn.Parameter(new_bias)
        else:
            layer.bias.copy_(new_bias)


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def followed_by_relu(model: nn.Module) -> set[str]:
    """Supported layers whose only user in the traced graph is a ReLU (module or function)."""
    gm = _fx_graph(model)
    if gm is None:
        return set()
    modules = dict(model.named_modules())
    out = set()
    for node in gm.graph.nodes:
        if node.op == "call_module" and is_supported(modules.get(node.target)) and len(node.users) == 1:
            user = next(iter(node.users))
            if (user.op == "call_module" and isinstance(modules.get(user.target), nn.ReLU)) or \
                    (user.op in ("call_function", "call_method") and user.target in (F.relu, torch.relu, "relu")):
                out.add(node.target)
    return out
