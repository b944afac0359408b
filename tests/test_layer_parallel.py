"""Layer-parallel quantization (qubo_round.pipeline.parallel): with layer-wise reconstruction the
layers are independent tasks on a Dask cluster; the model is the serial run's, bit for bit (same
problems, same seeds), and checkpoints are honoured."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("distributed", reason="layer-parallel runs need the extra 'dask'")

from qubo_round.pipeline import QuantConfig, quantize_model  # noqa: E402
from qubo_round.zoo import load_model  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc, \
            Client(lc) as client:
        yield client


@pytest.fixture(scope="module")
def digits():
    b = load_model("digits")
    return b, b.calibration(256, 0)


def _same(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("solver, params, group", [("gptq", {}, None), ("adaround", {"iterations": 300}, None),
                                                   ("gptq", {}, 16)])
def test_parallel_equals_serial(cluster, digits, solver, params, group):
    b, x = digits
    cfg = QuantConfig(bits=3, solver=solver, solver_params=params, reconstruction="layerwise", group_size=group)
    q1, r1 = quantize_model(b.model, x, cfg, progress=False)
    q2, r2 = quantize_model(b.model, x, cfg, progress=False, client=cluster)
    assert _same(q1, q2)
    assert [r.name for r in r2.layers] == [r.name for r in r1.layers]
    assert [r.loss for r in r2.layers] == [r.loss for r in r1.layers]
    assert r2.qstate.keys() == r1.qstate.keys()


def test_parallel_resumes_only_missing_layers(cluster, digits, tmp_path):
    b, x = digits
    cfg = QuantConfig(bits=3, solver="gptq", reconstruction="layerwise")
    q1, _ = quantize_model(b.model, x, cfg, progress=False, run_dir=tmp_path, client=cluster)
    for f in tmp_path.rglob("*fc1.*"):  # as if the run had been killed before fc1 finished
        f.unlink()
    q2, r2 = quantize_model(b.model, x, cfg, progress=False, run_dir=tmp_path, client=cluster)
    assert _same(q1, q2)
    assert {r.name: r.resumed for r in r2.layers} == {"conv1": True, "conv2": True, "conv3": True, "fc1": False,
                                                     "fc2": True}
    q3, _ = quantize_model(b.model, x, cfg, progress=False, run_dir=tmp_path)  # a serial rerun resumes them too
    assert _same(q1, q3)


@pytest.mark.parametrize("kw, match", [
    (dict(), "reconstruction='layerwise'"),
    (dict(reconstruction="layerwise", holdout=0.25), "holdout"),
    (dict(reconstruction="layerwise", form="data"), "covariance form"),
])
def test_unsupported_settings_refused_before_work(digits, tmp_path, kw, match):
    b, x = digits
    with pytest.raises(ValueError, match=match):
        quantize_model(b.model, x, QuantConfig(bits=3, solver="gptq", **kw), client="local", run_dir=tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_cli_scheduler_local(tmp_path, capsys):
    import json

    from qubo_round.cli import main
    assert main(["quantize", "--model", "digits", "--bits", "3", "--solver", "gptq", "--reconstruction", "layerwise",
                 "--calib-samples", "128", "--scheduler", "local", "--workers", "2", "--no-progress", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in out["layers"]] == ["conv1", "conv2", "conv3", "fc1", "fc2"]
    assert out["accuracy"] > 0.9
    assert main(["quantize", "--model", "digits", "--workers", "2", "--no-progress"]) == 2
    assert "needs --scheduler" in capsys.readouterr().err


def test_parallel_equals_serial_with_the_attention_value_loss(cluster):
    """The value projections' per-head mixed statistics travel as row blocks of one task."""
    pytest.importorskip("transformers")
    from attention_helpers import TinyEncoder, batches
    model, data = TinyEncoder(), batches(0)
    cfg = QuantConfig(bits=3, solver="adaround", solver_params={"iterations": 200}, reconstruction="layerwise",
                      value_loss="attention")
    q1, r1 = quantize_model(model, data, cfg, progress=False)
    q2, r2 = quantize_model(model, data, cfg, progress=False, client=cluster)
    assert _same(q1, q2)
    assert [r.loss for r in r2.layers] == [r.loss for r in r1.layers]
