"""ONNX export of a quantized model with QDQ weights, checked with onnxruntime.

Every quantized layer's weight is stored as an 8-bit integer initializer ``<layer>.weight_q``
with per-output-channel ``<layer>.weight_scale`` (float32) and ``<layer>.weight_zero_point``
(the integer type), and a ``DequantizeLinear`` node (``axis=0``) that produces the tensor
``<layer>.weight`` the rest of the graph consumes::

    W_hat[c, ...] = (q[c, ...] - zero_point[c]) * scale[c]       (ONNX DequantizeLinear)

which is :class:`~qubo_round.pipeline.qstate.LayerQState`'s ``scale * (q - zero_point)`` with
the scale rounded once to float32 (the weights differ from the torch model's float32 weights
by at most one float32 rounding of ``scale``, about ``6e-8`` relative). Activations stay float
(weight-only quantization, what the QUBO decides). The graph comes from torch's TorchScript
exporter with constant folding off, so the weight initializers keep their state-dict names.

Group-wise grids (one scale per output channel and group of ``g`` columns of the flattened
input) use the blocked form of ``DequantizeLinear`` (opset 21: ``axis=1, block_size=g``, scale
and zero point (out, ceil(cols / g))) on the weight seen as (out, cols), followed by a
``Reshape`` to a convolution's 4-D shape; such graphs are exported at opset 17 and converted
to :data:`BLOCKED_OPSET` with ONNX's version converter.

Grids wider than 8 bits have no 8-bit ONNX type: they are refused with the reason.
"""
from __future__ import annotations

import inspect
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..extras import require
from .export import _check_parents
from .qstate import LayerQState

log = logging.getLogger(__name__)

__all__ = ["export_onnx", "onnx_max_abs_diff", "check_onnx_target", "require_onnx"]

#: opset of the exported graph (per-axis DequantizeLinear needs 13; 17 is what onnxruntime
#: and the TorchScript exporter support best).
OPSET = 17
#: opset of graphs with group-wise layers (blocked DequantizeLinear).
BLOCKED_OPSET = 21


def require_onnx() -> None:
    """Raise :class:`~qubo_round.extras.MissingExtraError` (naming the extra ``onnx``) when onnx
    or onnxruntime is missing."""
    require("onnx", "onnx", "ONNX export")
    require("onnxruntime", "onnx", "checking an ONNX export")


def check_onnx_target(path, force: bool = False) -> Path:
    """Refuse an ONNX target that is a symlink, a folder, not ``*.onnx``, or an existing file
    (unless ``force``): checked before long work, and again by :func:`export_onnx`."""
    out = Path(path)
    _check_parents(out)
    if out.suffix != ".onnx":
        raise ValueError(f"ONNX target {out} must end in .onnx")
    if out.is_symlink():
        raise ValueError(f"ONNX target {out} is a symbolic link; give a real file path")
    if out.exists() and not out.is_file():
        raise ValueError(f"ONNX target {out} exists and is not a file; give a file path")
    if out.exists() and not force:
        raise FileExistsError(f"ONNX target {out} exists; choose a new path or pass --force (force=True)")
    return out


def _int8_type(qs: LayerQState, name: str):
    """The 8-bit numpy dtype holding the layer's integers, zero points included (int8 or uint8:
    ONNX takes the element type from the arrays)."""
    if qs.qmin >= -128 and qs.qmax <= 127:
        return np.int8
    if qs.qmin >= 0 and qs.qmax <= 255:
        return np.uint8
    raise ValueError(f"layer {name}: grid [{qs.qmin}, {qs.qmax}] does not fit 8 bits; ONNX QDQ export "
                     "needs bits <= 8")


def _inputs(example, model: nn.Module | None = None) -> tuple[tuple, dict, list[str]]:
    """(args, kwargs, input names) for the exporter from a tensor or a dict of tensors; a dict's
    keys in the order of ``model.forward``'s parameters (the exporter names the graph inputs in
    that order, whatever the dict's)."""
    if isinstance(example, torch.Tensor):
        return (example,), {}, ["input"]
    if isinstance(example, dict) and example and all(isinstance(v, torch.Tensor) for v in example.values()):
        if model is not None:
            params = list(inspect.signature(model.forward).parameters)
            unknown = [k for k in example if k not in params]
            if unknown:
                raise TypeError(f"example keys {unknown} are not parameters of {type(model).__name__}.forward "
                                f"({params})")
            example = {k: example[k] for k in params if k in example}
        return (), dict(example), list(example)
    raise TypeError("example must be a tensor or a dict of tensors (one batch of the model's input), "
                    f"got {type(example).__name__}")


def _export_graph(model: nn.Module, example, opset: int):
    """The float graph from torch's TorchScript exporter, weights under their state-dict names."""
    import io

    import onnx
    args, kwargs, names = _inputs(example, model)
    # batch axes dynamic; token inputs (integer (batch, sequence)) also their sequence axis
    dynamic = {n: {0: "batch", 1: "sequence"} if v.dim() == 2 and not v.dtype.is_floating_point else {0: "batch"}
               for n, v in zip(names, args or kwargs.values())}
    dynamic["output"] = {0: "batch"}
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(model, args, buf, kwargs=kwargs or None, input_names=names, output_names=["output"],
                          dynamic_axes=dynamic, opset_version=opset, do_constant_folding=False, dynamo=False)
    return onnx.load_from_string(buf.getvalue())


def _add_qdq(graph, qstate: dict[str, LayerQState]) -> None:
    """Replace each quantized layer's float weight initializer by int8 + scale + zero point and a
    DequantizeLinear node producing the same tensor name."""
    from onnx import helper, numpy_helper
    inits = {t.name: t for t in graph.initializer}
    nodes = []
    for name, qs in qstate.items():
        key = f"{name}.weight"
        if key not in inits:
            raise ValueError(f"layer {name}: the exported graph has no initializer {key!r} (the exporter "
                             "renamed or folded it); cannot attach its quantized weight")
        old = numpy_helper.to_array(inits[key])
        if tuple(old.shape) != tuple(qs.q.shape):
            raise ValueError(f"layer {name}: graph weight {old.shape} != quantized state {tuple(qs.q.shape)}")
        dtype = _int8_type(qs, name)
        q = qs.q.numpy().astype(dtype)
        scale = qs.scale.numpy().astype(np.float32)
        zp = qs.zero_point.numpy().astype(dtype)
        graph.initializer.remove(inits[key])
        blocked = bool(qs.group_size)
        if blocked:
            q = q.reshape(q.shape[0], -1)  # groups run over the flattened (in, kh, kw) columns
        graph.initializer.extend([numpy_helper.from_array(q, f"{key}_q"),
                                  numpy_helper.from_array(scale, f"{key}_scale"),
                                  numpy_helper.from_array(zp, f"{key}_zero_point")])
        reshape = blocked and q.shape != tuple(qs.q.shape)
        attrs = dict(axis=1, block_size=int(qs.group_size)) if blocked else dict(axis=0)
        nodes.append(helper.make_node("DequantizeLinear", [f"{key}_q", f"{key}_scale", f"{key}_zero_point"],
                                      [f"{key}_2d" if reshape else key], name=f"{key}_DequantizeLinear", **attrs))
        if reshape:
            graph.initializer.append(numpy_helper.from_array(np.array(qs.q.shape, np.int64), f"{key}_shape"))
            nodes.append(helper.make_node("Reshape", [f"{key}_2d", f"{key}_shape"], [key], name=f"{key}_Reshape"))
    for i, node in enumerate(nodes):  # topological order: the weights first
        graph.node.insert(i, node)


def export_onnx(model: nn.Module, qstate: dict[str, LayerQState], path, example, *,
                opset: int = OPSET, force: bool = False) -> Path:
    """Write ``model`` (its quantized layers given by ``qstate``) as a QDQ ONNX file.

    Args:
        model: the quantized model (float weights elsewhere), on the CPU.
        qstate: layer name -> :class:`LayerQState` (``QuantReport.qstate``).
        path: the ``.onnx`` file (:func:`check_onnx_target`); written atomically.
        example: one batch of the model's input: a tensor, or a dict of tensors (keyword
            arguments, e.g. MiniLM's ``input_ids`` and ``attention_mask``); batch (and sequence)
            axes are dynamic.
    Returns:
        the path written.
    """
    require_onnx()
    import onnx
    out = check_onnx_target(path, force)
    proto = _export_graph(model.eval(), example, opset)
    if any(qs.group_size for qs in qstate.values()) and opset < BLOCKED_OPSET:
        from onnx import version_converter
        proto = version_converter.convert_version(proto, BLOCKED_OPSET)
    _add_qdq(proto.graph, qstate)
    proto.producer_name = "qubo-round"
    onnx.checker.check_model(proto)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(proto.SerializeToString())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.info("ONNX QDQ export of %d quantized layers: %s", len(qstate), out)
    return out


def onnx_max_abs_diff(path, model: nn.Module, inputs, *, optimized: bool = False) -> float:
    """Largest ``|onnxruntime(path)(x) - model(x)|`` over ``inputs`` (a tensor, a dict of
    tensors, or a list of either, one batch each).

    ``optimized=False`` runs the graph as written (onnxruntime's basic optimisations only): it
    checks the export. ``optimized=True`` lets onnxruntime fuse each weight's DequantizeLinear
    with its MatMul into its low-bit kernel (``MatMulNBits``), which computes in its own
    precision: on MiniLM with three 4-bit layers ``tests/test_onnx_export.py`` bounds it by 1e-2
    on unit-norm embeddings, the graph as written by 1e-4.
    """
    ort = require("onnxruntime", "onnx", "checking an ONNX export")
    so = ort.SessionOptions()
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimized else
                                   ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    batches = inputs if isinstance(inputs, list) else [inputs]
    worst = 0.0
    for b in batches:
        args, kwargs, _ = _inputs(b)
        feed = ({names[0]: args[0].numpy()} if args else {k: kwargs[k].numpy() for k in names})
        got = sess.run(None, feed)[0]
        with torch.no_grad():
            ref = (model(*args) if args else model(**kwargs)).numpy()
        worst = max(worst, float(np.abs(got - ref).max()))
    return worst
