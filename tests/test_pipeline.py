"""Full-network quantization: hard rounding, export round trip, kill-and-resume, bad input."""
import json
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from torch import nn

from qubo_round.pipeline import LayerOverride, QuantConfig, load_quantized, quantize_model, save_quantized
from qubo_round.pipeline.graph import fold_batchnorm, followed_by_relu
from qubo_round.zoo import load_model


@pytest.fixture(scope="module")
def digits():
    b = load_model("digits")
    return b, b.calibration(256, 0)


def _check_hard(qmodel, report):
    for name, qs in report.qstate.items():
        w = qmodel.get_submodule(name).weight.detach()
        assert (qs.q >= qs.qmin).all() and (qs.q <= qs.qmax).all()
        shape = (-1,) + (1,) * (qs.q.dim() - 1)
        expect = (qs.scale.reshape(shape) * (qs.q.double() - qs.zero_point.reshape(shape))).float()
        assert torch.equal(w, expect), name
        assert torch.equal(qs.zero_point, qs.zero_point.round())


@pytest.mark.parametrize("granularity,scheme", [("channel", "symmetric"), ("tensor", "asymmetric")])
def test_every_weight_is_on_the_grid(digits, granularity, scheme):
    b, x = digits
    q, r = quantize_model(b.model, x, QuantConfig(bits=3, granularity=granularity, scheme=scheme,
                                                  solver="greedy"), progress=False)
    assert [row.name for row in r.layers] == ["conv1", "conv2", "conv3", "fc1", "fc2"]
    _check_hard(q, r)
    for row in r.layers:
        assert row.loss <= row.nearest_loss + 1e-12  # greedy starts at nearest and only descends
    # the input model is untouched
    assert not torch.equal(q.conv2.weight, b.model.conv2.weight)


def test_export_round_trip(digits, tmp_path):
    b, x = digits
    q, r = quantize_model(b.model, x, QuantConfig(bits=4, solver="greedy"), progress=False)
    save_quantized(q, r, tmp_path / "exp", model_name="digits")
    manifest = json.loads((tmp_path / "exp" / "manifest.json").read_text())
    assert set(manifest["layers"]) == {"conv1", "conv2", "conv3", "fc1", "fc2"}
    rebuilt = load_quantized(tmp_path / "exp")
    xe, _ = b.evaluation()
    with torch.no_grad():
        assert torch.equal(rebuilt(xe), q(xe))
    from safetensors.torch import load_file
    t = load_file(str(tmp_path / "exp" / "model.safetensors"))
    assert t["q.fc1.q"].dtype == torch.int16 and "float.fc1.bias" in t and "float.fc1.weight" not in t


_RUNNER = textwrap.dedent("""
    import sys
    from qubo_round.pipeline import QuantConfig, quantize_model
    from qubo_round.zoo import load_model
    b = load_model("digits")
    quantize_model(b.model, b.calibration(256, 0), QuantConfig(bits=3, solver="stochastic",
                   solver_params={"k": 400}, seed=5), run_dir=sys.argv[1], progress=False)
""")


def test_kill_and_resume_gives_the_identical_model(digits, tmp_path):
    b, x = digits
    cfg = QuantConfig(bits=3, solver="stochastic", solver_params={"k": 400}, seed=5)
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", _RUNNER, str(run)], stderr=subprocess.DEVNULL)
    layers = run / "layers"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(layers.glob("*.json"))) < 2 and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(p.name for p in layers.glob("*.json"))
    assert 1 <= len(done) < 5, f"the kill came too late or too early: {done}"
    q_resumed, r_resumed = quantize_model(b.model, x, cfg, run_dir=run, progress=False)
    assert sum(row.resumed for row in r_resumed.layers) == len(done)
    q_full, _ = quantize_model(b.model, x, cfg, progress=False)
    for (k, v), (k2, v2) in zip(q_resumed.state_dict().items(), q_full.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k


def test_run_directory_of_another_configuration_is_refused(digits, tmp_path):
    b, x = digits
    quantize_model(b.model, x[:32], QuantConfig(bits=3, solver="nearest"), run_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"(?s)refusing to resume.*bits: 3 \(run directory\) != 4 \(now\)"):
        quantize_model(b.model, x[:32], QuantConfig(bits=4, solver="nearest"), run_dir=tmp_path, progress=False)


def test_model_without_supported_layers():
    with pytest.raises(ValueError, match="no supported layer"):
        quantize_model(nn.Sequential(nn.ReLU(), nn.Flatten()), torch.randn(4, 3), QuantConfig(solver="nearest"),
                       progress=False)


def test_calibration_data_that_does_not_fit(digits):
    b, _ = digits
    with pytest.raises(ValueError, match="calibration data does not fit the model"):
        quantize_model(b.model, torch.randn(8, 3, 8, 8), QuantConfig(solver="nearest"), progress=False)


def test_non_finite_activation(digits):
    b, x = digits
    x = x[:16].clone()
    x[3, 0, 2, 2] = float("inf")
    with pytest.raises(ValueError, match=r"layer 'conv1': non-finite"):
        quantize_model(b.model, x, QuantConfig(solver="nearest"), progress=False)


class TokenModel(nn.Module):
    """A transformer-like toy: dict batches, an embedding (unsupported) and two Linear layers."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.proj = nn.Linear(16, 16)
        self.head = nn.Linear(16, 4)
        self.unused = nn.Linear(16, 16)

    def forward(self, input_ids, attention_mask):
        h = torch.relu(self.proj(self.emb(input_ids))) * attention_mask[..., None]
        return self.head(h.mean(1))


def test_dict_batches_and_skipped_layers_are_reported():
    torch.manual_seed(0)
    m = TokenModel().eval()
    batches = [{"input_ids": torch.randint(0, 50, (8, 7)), "attention_mask": torch.ones(8, 7)} for _ in range(3)]
    q, r = quantize_model(m, batches, QuantConfig(bits=4, solver="greedy",
                                                  overrides={"head": LayerOverride(bits=8)}), progress=False)
    assert [row.name for row in r.layers] == ["proj", "head"]
    assert r.layers[1].bits == 8
    assert "unsupported type Embedding" in r.skipped["emb"]
    assert "not executed" in r.skipped["unused"]
    _check_hard(q, r)
    with pytest.raises(ValueError, match=r"overrides name layer\(s\) \['nope'\]"):
        quantize_model(m, batches, QuantConfig(solver="nearest", overrides={"nope": LayerOverride(skip=True)}),
                       progress=False)


def test_batchnorm_folding_preserves_outputs():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(2, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(16, 3))
    with torch.no_grad():
        m[1].running_mean.uniform_(-1, 1)
        m[1].running_var.uniform_(0.5, 2)
        m[1].weight.uniform_(0.5, 2)
    m.eval()
    x = torch.randn(5, 2, 4, 4)
    ref = m(x)
    assert fold_batchnorm(m) == ["1"]
    assert isinstance(m[1], nn.Identity)
    torch.testing.assert_close(m(x), ref, rtol=1e-5, atol=1e-6)


def test_relu_detection_on_digits(digits):
    b, _ = digits
    assert followed_by_relu(b.model) == {"conv1", "conv2", "conv3", "fc1"}


def test_data_form_with_relu_runs_and_improves(digits):
    b, x = digits
    q, r = quantize_model(b.model, x[:64], QuantConfig(bits=3, solver="adaround", form="data", activation="relu",
                                                       solver_params={"iterations": 150}), progress=False)
    assert [row.form for row in r.layers] == ["data"] * 5
    assert [row.activation for row in r.layers] == ["relu"] * 4 + ["none"]
    _check_hard(q, r)


def test_cli_quantize_json(capsys, tmp_path):
    from qubo_round.cli import main
    assert main(["quantize", "--model", "digits", "--bits", "4", "--solver", "greedy", "--calib-samples", "128",
                 "--no-progress", "--json", "--export", str(tmp_path / "e")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"model", "bits", "solver", "float_accuracy", "nearest_accuracy", "accuracy", "seconds"} <= set(out)
    assert out["float_accuracy"] > 0.97 and out["accuracy"] >= out["nearest_accuracy"] - 0.02
    assert (tmp_path / "e" / "manifest.json").exists()


def test_cli_quantize_layerwise_reconstruction(capsys, tmp_path):
    from qubo_round.cli import main
    assert main(["quantize", "--model", "digits", "--bits", "4", "--solver", "greedy", "--calib-samples", "64",
                 "--reconstruction", "layerwise", "--no-progress", "--json", "--run-dir", str(tmp_path / "r")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["accuracy"] > 0.9
    assert "layerwise" in "".join(p.read_text() for p in (tmp_path / "r").rglob("*.json"))


def test_cli_user_model(capsys, tmp_path):
    from qubo_round.cli import main
    (tmp_path / "m.py").write_text("import torch\n"
                                   "def make():\n"
                                   "    torch.manual_seed(0)\n"
                                   "    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))\n")
    torch.save(torch.randn(64, 6), tmp_path / "calib.pt")
    torch.save((torch.randn(32, 6), torch.randint(0, 3, (32,))), tmp_path / "eval.pt")
    assert main(["quantize", "--model", f"{tmp_path / 'm.py'}:make", "--calib", str(tmp_path / "calib.pt"),
                 "--eval", str(tmp_path / "eval.pt"), "--solver", "greedy", "--bits", "3", "--json",
                 "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in out["layers"]] == ["0", "2"] and 0 <= out["accuracy"] <= 1
    assert main(["quantize", "--model", f"{tmp_path / 'm.py'}:nope", "--calib", str(tmp_path / "calib.pt")]) == 2
    assert "defines no function 'nope'" in capsys.readouterr().err


def test_layerwise_reconstruction(digits, tmp_path):
    """``reconstruction="layerwise"`` (eq. 20, x_hat = x): every layer's problem is the covariance
    QUBO on the float network's inputs, so each layer's rounding equals the solver's result on
    ``layer_problems(float model, layer)``; the first layer (same inputs either way) agrees with the
    asymmetric run, later layers do not; the setting is validated and changes the fingerprint."""
    from qubo_round.extract import layer_problems
    from qubo_round.pipeline.config import QuantConfig as QC
    from qubo_round.solvers import get_solver
    b, x = digits
    x = x[:64]
    lw = QuantConfig(bits=2, solver="gptq", reconstruction="layerwise", polish=False)  # the solver's own rounding
    q, r = quantize_model(b.model, x, lw, progress=False)
    qa, ra = quantize_model(b.model, x, QuantConfig(bits=2, solver="gptq", polish=False), progress=False)
    _check_hard(q, r)
    fmodel = fold_batchnorm_copy(b.model)
    for row in r.layers:
        ps = layer_problems(fmodel, row.name, x, lw.grid(), form="covariance")
        Vs = [p.to_rounding(get_solver("gptq").solve(p, seed=0).best) for p in ps]
        assert row.loss == pytest.approx(sum(p.energy(p.from_rounding(v)) for p, v in zip(ps, Vs)), rel=1e-6)
        w = q.get_submodule(row.name).weight.detach()
        expect = np.concatenate([p.space.dequantize(v) for p, v in zip(ps, Vs)], 0).reshape(w.shape)
        np.testing.assert_allclose(w.numpy(), expect, rtol=1e-6, atol=1e-7)
    assert torch.equal(q.conv1.weight, qa.conv1.weight)
    assert not torch.equal(q.fc1.weight, qa.fc1.weight)
    assert r.layers[-1].loss != ra.layers[-1].loss
    # validated, in the fingerprint (the default is left out: earlier run directories resume)
    with pytest.raises(ValueError, match="reconstruction"):
        QC(reconstruction="blockwise")
    assert "reconstruction" not in QC().to_dict() and QC(reconstruction="layerwise").to_dict()["reconstruction"] == "layerwise"
    assert QC().fingerprint() != QC(reconstruction="layerwise").fingerprint()
    quantize_model(b.model, x[:32], QC(bits=3, solver="nearest"), run_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"(?s)refusing to resume.*reconstruction"):
        quantize_model(b.model, x[:32], QC(bits=3, solver="nearest", reconstruction="layerwise"), run_dir=tmp_path,
                       progress=False)
    # the data form (ReLU-aware loss) takes the float inputs too
    q2, r2 = quantize_model(b.model, x[:64], QuantConfig(bits=3, solver="adaround", form="data", activation="relu",
                                                         reconstruction="layerwise",
                                                         solver_params={"iterations": 50}), progress=False)
    _check_hard(q2, r2)


def fold_batchnorm_copy(model):
    import copy
    m = copy.deepcopy(model).eval()
    fold_batchnorm(m)
    return m


def test_report_says_where_each_layer_spent_its_time(digits, tmp_path):
    """Per layer: capture, solver and polish seconds that fit inside the layer's seconds, and the
    iterations the relaxation ran (both forms; none for a solver without iterations); a resumed
    run reads them back from the run directory."""
    b, x = digits
    over = {"conv2": LayerOverride(form="data"), "fc1": LayerOverride(solver="gptq", solver_params={}),
            "fc2": LayerOverride(polish=False)}
    cfg = QuantConfig(bits=3, solver_params={"iterations": 120}, overrides=over)
    _, rep = quantize_model(b.model, x[:64], cfg, run_dir=tmp_path, progress=False)
    rows = {r.name: r for r in rep.layers}
    assert rows["conv2"].form == "data" and rows["conv1"].form == "covariance"
    for r in rep.layers:
        parts = r.capture_seconds + r.solve_seconds + r.polish_seconds
        assert r.capture_seconds > 0 and r.solve_seconds > 0 and parts <= r.seconds, r
        assert (r.polish_seconds > 0) == (r.name != "fc2"), r
    for name in ("conv1", "conv2", "conv3", "fc2"):  # stop on freezing: a multiple of the check interval
        assert 0 < rows[name].iterations <= 120 and (rows[name].iterations == 120 or rows[name].iterations % 50 == 0)
    assert rows["fc1"].iterations is None
    assert set(rep.rows()[0]) >= {"capture_seconds", "solve_seconds", "polish_seconds", "iterations"}
    total = rep.to_markdown().splitlines()[-1]  # the totals row: summed losses, layer and solver seconds
    assert total.startswith("| **total** (5 layers)") and f"| {rep.nearest_loss:.4g} | {rep.loss:.4g} |" in total
    assert total.endswith(f"| {sum(r.seconds for r in rep.layers):.2f} ({sum(r.solve_seconds for r in rep.layers):.2f}) |")
    _, again = quantize_model(b.model, x[:64], cfg, run_dir=tmp_path, progress=False)
    assert [(r.solve_seconds, r.iterations) for r in again.layers] == [(r.solve_seconds, r.iterations) for r in rep.layers]
    assert all(r.resumed for r in again.layers)
