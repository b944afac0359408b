"""Group-wise grids through the whole pipeline: solve, write-back, checkpoints, export, ONNX, CLI."""
import numpy as np
import pytest
import torch

from qubo_round.cli import main
from qubo_round.pipeline import QuantConfig, load_quantized, quantize_model, save_quantized
from qubo_round.zoo import load_model

G = 16  # digits: conv1 has 9 columns (one short group), conv2 144 = 9 x 16, conv3 72 = 4.5 x 16


@pytest.fixture(scope="module")
def digits():
    b = load_model("digits")
    return b, b.calibration(256, 0)


def _on_group_grid(qmodel, report, g):
    """Every quantized weight is scale[c, j // g] * (q - zero_point[c, j // g]) over the flattened
    input columns j, computed here independently of LayerQState."""
    for name, qs in report.qstate.items():
        q = qs.q.double().reshape(qs.q.shape[0], -1).numpy()
        cols = q.shape[1]
        assert tuple(qs.scale.shape) == (q.shape[0], -(-cols // g)), name
        j = np.arange(cols) // g
        s, z = qs.scale.numpy()[:, j], qs.zero_point.numpy()[:, j]
        assert (q >= qs.qmin).all() and (q <= qs.qmax).all()
        w = qmodel.get_submodule(name).weight.detach().reshape(q.shape[0], -1)
        assert torch.equal(w, torch.as_tensor(s * (q - z)).float()), name


@pytest.mark.parametrize("solver,scheme", [("gptq", "symmetric"), ("adaround", "asymmetric")])
def test_group_runs_stay_on_the_grid_and_round_trip(digits, tmp_path, solver, scheme):
    b, x = digits
    params = {"iterations": 300} if solver == "adaround" else {}
    cfg = QuantConfig(bits=3, scheme=scheme, group_size=G, solver=solver, solver_params=params)
    q, r = quantize_model(b.model, x, cfg, progress=False, run_dir=tmp_path / "run")
    _on_group_grid(q, r, G)
    assert all(row.loss <= row.nearest_loss for row in r.layers)
    save_quantized(q, r, tmp_path / "exp", model_name="digits")
    xe, _ = b.evaluation()
    with torch.no_grad():
        assert torch.equal(load_quantized(tmp_path / "exp")(xe), q(xe))
    # the run directory resumes to the same model, and a per-channel run may not reuse it
    q2, _ = quantize_model(b.model, x, cfg, progress=False, run_dir=tmp_path / "run")
    assert all(torch.equal(a, c) for a, c in zip(q.state_dict().values(), q2.state_dict().values()))
    with pytest.raises(ValueError, match="group_size"):
        quantize_model(b.model, x, QuantConfig(bits=3, scheme=scheme, solver=solver, solver_params=params),
                       progress=False, run_dir=tmp_path / "run")


def test_group_data_form_and_finer_grids_lower_the_loss(digits):
    b, x = digits
    base = dict(bits=2, solver="adaround", solver_params={"iterations": 200}, form="data",
                reconstruction="layerwise")
    qg, rg = quantize_model(b.model, x, QuantConfig(group_size=G, **base), progress=False)
    _on_group_grid(qg, rg, G)
    _, rc = quantize_model(b.model, x, QuantConfig(**base), progress=False)
    # a group scale is chosen for its own columns: nearest on groups is the finer grid of the two
    assert sum(r.nearest_loss for r in rg.layers) < sum(r.nearest_loss for r in rc.layers)


def test_group_export_is_validated(digits, tmp_path):
    from safetensors.torch import load_file, save_file
    b, x = digits
    q, r = quantize_model(b.model, x[:64], QuantConfig(bits=4, group_size=G, solver="nearest"), progress=False)
    save_quantized(q, r, tmp_path / "exp", model_name="digits")
    f = tmp_path / "exp" / "model.safetensors"
    t = load_file(str(f))
    t["q.fc1.scale"] = t["q.fc1.scale"][:, :-1].contiguous()
    save_file(t, str(f))
    with pytest.raises(ValueError, match=r"q\.fc1: scale .* must both be \(64, 32\)"):
        load_quantized(tmp_path / "exp")


def test_group_onnx_export_uses_blocked_dequantize(digits, tmp_path):
    onnx = pytest.importorskip("onnx", reason="ONNX export needs the extra: pip install 'qubo-round[onnx]'")
    pytest.importorskip("onnxruntime", reason="the ONNX check needs onnxruntime (extra 'onnx')")
    from qubo_round.pipeline.onnx_export import export_onnx, onnx_max_abs_diff
    b, x = digits
    q, r = quantize_model(b.model, x[:64], QuantConfig(bits=4, group_size=G, solver="nearest"), progress=False)
    path = export_onnx(q, r.qstate, tmp_path / "g.onnx", x[:2])
    proto = onnx.load(str(path))
    dq = [n for n in proto.graph.node if n.op_type == "DequantizeLinear"]
    assert len(dq) == 5 and all({a.name: a.i for a in n.attribute}["block_size"] == G for n in dq)
    xe, _ = b.evaluation()
    assert onnx_max_abs_diff(path, q, [xe[:100], xe[100:]]) < 1e-4  # as per channel (test_onnx_export)


def test_cli_group_size(capsys, tmp_path):
    assert main(["quantize", "--model", "digits", "--bits", "4", "--group-size", "0", "--solver", "nearest"]) == 2
    err = capsys.readouterr().err
    assert "group_size must be a positive integer" in err and len(err.strip().splitlines()) == 1
    assert main(["problem", "--layer", "fc1", "--bits", "3", "--group-size", "32", "--samples", "64",
                 "--dump", str(tmp_path / "fc1.npz")]) == 0
    from qubo_round.io import load_problem
    p = load_problem(tmp_path / "fc1.npz")
    assert p.column_scaled and p.space.s.shape == (64, 16) and p.meta["group_size"] == 32
