"""Exports and read-back are trusted only after checks: atomic writes that never follow links
nor overwrite what they did not write, and validated integers, scales and folded batch norms."""
import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from qubo_round.pipeline import QuantConfig, load_quantized, quantize_model, save_quantized
from qubo_round.pipeline.qstate import LayerQState
from qubo_round.zoo import load_model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    b = load_model("digits")
    q, r = quantize_model(b.model, b.calibration(128, 0), QuantConfig(bits=3, solver="greedy"), progress=False)
    return q, r


def test_existing_export_needs_force_and_is_replaced_whole(exported, tmp_path):
    q, r = exported
    out = save_quantized(q, r, tmp_path / "exp", model_name="digits")
    with pytest.raises(FileExistsError, match="not empty.*--force"):
        save_quantized(q, r, out, model_name="digits")
    save_quantized(q, r, out, model_name="digits", force=True)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    load_quantized(out)


def test_symlinks_and_foreign_folders_refused(exported, tmp_path):
    q, r = exported
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / "exp").mkdir()
    os.symlink(victim, tmp_path / "exp" / "manifest.json")
    with pytest.raises(ValueError, match="not an earlier export"):
        save_quantized(q, r, tmp_path / "exp", force=True)
    assert victim.read_text() == "keep me"
    os.symlink(tmp_path / "elsewhere", tmp_path / "link")
    with pytest.raises(ValueError, match="symbolic link"):
        save_quantized(q, r, tmp_path / "link")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not an earlier export"):
        save_quantized(q, r, tmp_path / "other", force=True)
    assert (tmp_path / "other" / "notes.txt").read_text() == "x"


def _tamper(out, key, value):
    t = load_file(str(out / "model.safetensors"))
    t[key] = value
    save_file(t, str(out / "model.safetensors"))


@pytest.mark.parametrize("key, make, match", [
    ("q.fc1.q", lambda t: torch.full_like(t, 1000), "outside its limits"),
    ("q.fc1.q", lambda t: t.to(torch.float32) + 0.5, "must hold integers"),
    ("q.fc1.scale", lambda t: torch.full_like(t, float("nan")), "finite and > 0"),
    ("q.fc1.scale", lambda t: t[:-1].clone(), "one per output channel"),
    ("q.fc1.limits", lambda t: torch.tensor([3, -4]), "not a valid grid"),
    ("q.fc1.zero_point", lambda t: t + 0.5, "zero_point must be integers"),
])
def test_tampered_export_refused(exported, tmp_path, key, make, match):
    q, r = exported
    out = save_quantized(q, r, tmp_path / "exp", model_name="digits")
    _tamper(out, key, make(load_file(str(out / "model.safetensors"))[key]))
    with pytest.raises(ValueError, match=match):
        load_quantized(out)


def test_folded_bn_must_name_a_batch_norm(exported, tmp_path):
    q, r = exported
    out = save_quantized(q, r, tmp_path / "exp", model_name="digits")
    m = json.loads((out / "manifest.json").read_text())
    m["folded_bn"] = ["conv1"]
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="not a batch norm"):
        load_quantized(out)


def test_qstate_round_trip_still_exact(exported):
    _, r = exported
    for name, qs in r.qstate.items():
        back = LayerQState.from_tensors(qs.tensors("p"), "p")
        assert torch.equal(back.weight(), qs.weight())


def test_cli_export_target_checked_before_the_work(tmp_path, capsys):
    from qubo_round.cli import main
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "x").write_text("x")
    assert main(["quantize", "--model", "digits", "--export", str(tmp_path / "exp"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "exists and is not empty" in err and len(err.splitlines()) == 1


def test_tampered_checkpoint_refused_on_resume(tmp_path):
    b = load_model("digits")
    x = b.calibration(128, 0)
    cfg = QuantConfig(bits=3, solver="greedy")
    quantize_model(b.model, x, cfg, run_dir=tmp_path, progress=False)
    tens = sorted(tmp_path.rglob("*fc1.safetensors"))[0]
    t = load_file(str(tens))
    t["layer.q"] = torch.full_like(t["layer.q"], 1000)
    save_file(t, str(tens))
    with pytest.raises(ValueError, match="checkpoint of layer fc1.*outside its limits.*delete both files"):
        quantize_model(b.model, x, cfg, run_dir=tmp_path, progress=False)
    meta = tens.with_suffix(".json")
    m = json.loads(meta.read_text())
    m["loss"] = float("nan")
    meta.write_text(json.dumps(m))
    with pytest.raises(ValueError, match="checkpoint of layer fc1.*loss"):
        quantize_model(b.model, x, cfg, run_dir=tmp_path, progress=False)


def test_run_directory_refuses_other_data_or_a_sign_flipped_model(tmp_path):
    import copy
    b = load_model("digits")
    cfg = QuantConfig(bits=3, solver="greedy")
    quantize_model(b.model, b.calibration(128, 0), cfg, run_dir=tmp_path, progress=False)
    _, again = quantize_model(b.model, b.calibration(128, 0), cfg, run_dir=tmp_path, progress=False)
    assert all(r.resumed for r in again.layers)
    with pytest.raises(ValueError, match="calibration_s"):
        quantize_model(b.model, b.calibration(64, 0), cfg, run_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="calibration_sha256"):
        quantize_model(b.model, b.calibration(128, 1), cfg, run_dir=tmp_path, progress=False)
    flipped = copy.deepcopy(b.model)
    with torch.no_grad():
        flipped.fc2.weight.neg_()  # same sum of absolute weights
    with pytest.raises(ValueError, match="weights_sha256"):
        quantize_model(flipped, b.calibration(128, 0), cfg, run_dir=tmp_path, progress=False)
