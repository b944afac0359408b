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


@pytest.fixture
def finished_run(tmp_path):
    b = load_model("digits")
    x = b.calibration(128, 0)
    cfg = QuantConfig(bits=3, solver="greedy")
    quantize_model(b.model, x, cfg, run_dir=tmp_path, progress=False)
    tens = sorted(tmp_path.rglob("*fc1.safetensors"))[0]
    return (lambda: quantize_model(b.model, x, cfg, run_dir=tmp_path, progress=False)), tens, tens.with_suffix(".json")


def test_tampered_checkpoint_refused_on_resume(finished_run):
    resume, tens, meta = finished_run
    t = load_file(str(tens))
    t["layer.q"] = torch.full_like(t["layer.q"], 1000)
    save_file(t, str(tens))
    with pytest.raises(ValueError, match="checkpoint of layer fc1.*outside its limits.*delete both files"):
        resume()
    m = json.loads(meta.read_text())
    m["loss"] = float("nan")
    meta.write_text(json.dumps(m))
    with pytest.raises(ValueError, match="checkpoint of layer fc1.*loss"):
        resume()


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


@pytest.mark.parametrize("edit, match", [
    (lambda m: m.update(nearest_loss=-123.0), "nearest_loss -123.0 is not a finite number >= 0"),
    (lambda m: m.update(solver_loss=-5), "solver_loss -5 is not a finite number >= 0"),
    (lambda m: m.update(name="fc2"), "report of layer 'fc2'"),
    (lambda m: m.update(changed_fraction=3.0), "changed_fraction 3.0"),
])
def test_checkpoint_report_numbers_checked_on_resume(finished_run, edit, match):
    resume, _, meta = finished_run
    m = json.loads(meta.read_text())
    edit(m)
    meta.write_text(json.dumps(m))
    with pytest.raises(ValueError, match=f"checkpoint of layer fc1.*{match}"):
        resume()


def test_checkpoint_with_widened_limits_refused_on_resume(finished_run):
    """q = 1000 with limits widened to [-1000, 1000] is consistent on its own; it is not this run's grid."""
    resume, tens, _ = finished_run
    t = load_file(str(tens))
    t["layer.q"] = torch.full_like(t["layer.q"], 1000)
    t["layer.limits"] = torch.tensor([-1000, 1000])
    save_file(t, str(tens))
    with pytest.raises(ValueError, match=r"grid limits \(-1000, 1000\) are not this run's \(-4, 3\)"):
        resume()


def test_corrupt_checkpoint_bytes_and_config_named(finished_run, tmp_path, capsys):
    resume, tens, _ = finished_run
    tens.write_bytes(b"\x00" * 3)
    with pytest.raises(ValueError, match=r"checkpoint of layer fc1 \(.*fc1\.json/\.safetensors\) is invalid"):
        resume()
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"run directory config .*config\.json is not a readable run configuration"):
        resume()
    from qubo_round.cli import main
    assert main(["quantize", "--model", "digits", "--bits", "3", "--solver", "greedy", "--run-dir", str(tmp_path),
                 "--no-progress", "--calib-samples", "128"]) == 2
    err = capsys.readouterr().err.strip()
    assert "config.json" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("target, edit, match", [
    ("model.safetensors", lambda p: p.write_bytes(b"\x01\x02"), r"model\.safetensors is not a readable safetensors file"),
    ("manifest.json", lambda p: p.write_text("{"), r"manifest\.json is not a readable export manifest"),
    ("manifest.json", lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "layers": {
        k: {**v, "qmin": -1000} for k, v in json.loads(p.read_text())["layers"].items()}})),
     "manifest entry .* does not match its tensors"),
])
def test_corrupt_export_files_named(exported, tmp_path, target, edit, match):
    q, r = exported
    out = save_quantized(q, r, tmp_path / "exp", model_name="digits")
    edit(out / target)
    with pytest.raises(ValueError, match=match):
        load_quantized(out)


def test_targets_under_a_file_refused_before_the_work(tmp_path, capsys):
    from qubo_round.cli import main
    (tmp_path / "c.pt").write_text("x")
    for flag, path in (("--export", "c.pt/sub"), ("--export-onnx", "c.pt/x.onnx")):
        assert main(["quantize", "--model", "digits", flag, str(tmp_path / path), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert "c.pt is a file, not a folder" in err and len(err.splitlines()) == 1


def test_run_dir_that_is_a_file_is_one_line(tmp_path, capsys):
    from qubo_round.cli import main
    (tmp_path / "f").write_text("x")
    for run_dir in ("f", "f/sub"):  # the file itself, and a folder below it (an OSError: one line too)
        assert main(["quantize", "--model", "digits", "--solver", "nearest", "--run-dir", str(tmp_path / run_dir),
                     "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("qubo-round: error:") and len(err.splitlines()) == 1
    assert (tmp_path / "f").read_text() == "x"


def test_license_file_matches_the_package_metadata():
    import tomllib
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    text = (root / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0" in text
    assert tomllib.loads((root / "pyproject.toml").read_text())["project"]["license"]["text"] == "Apache-2.0"
