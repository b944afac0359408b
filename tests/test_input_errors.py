"""Bad inputs get a one-line error before any work (issue 17's probes: --calib-samples 0, bits=0 in
an override, a boolean iteration count, an override's bad parameters for a late layer)."""
import pytest

from qubo_round.cli import main
from qubo_round.pipeline import LayerOverride, QuantConfig, quantize_model
from qubo_round.solvers import get_solver
from qubo_round.zoo import load_model


@pytest.mark.parametrize("argv, match", [
    (["--calib-samples", "0"], "--calib-samples must be >= 1, got 0"),
    (["--calib-samples", "-5"], "--calib-samples must be >= 1"),
    (["--param", "iterations=True"], "parameter iterations must be a number (default 10000), got True"),
])
def test_cli_bad_input_one_line_exit_2(argv, match, capsys):
    assert main(["quantize", "--model", "digits", "--bits", "2", "--no-progress", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("bits", [0, 1, 9, True, 2.5])
def test_override_bits_out_of_range_refused(bits):
    with pytest.raises(ValueError, match="LayerOverride bits"):
        LayerOverride(bits=bits)


def test_override_bits_none_keeps_run_bits_and_given_bits_win():
    c = QuantConfig(bits=3, overrides={"fc1": LayerOverride(bits=2), "fc2": LayerOverride()})
    assert c.for_layer("fc1").bits == 2 and c.for_layer("fc2").bits == 3 and c.for_layer("conv1").bits == 3


@pytest.mark.parametrize("name", ["adaround", "sigmoid-anneal", "ste"])
def test_boolean_iterations_refused(name):
    with pytest.raises((ValueError, TypeError), match="iterations"):
        get_solver(name, iterations=True)


def test_late_override_checked_before_the_first_layer(tmp_path):
    b = load_model("digits")
    run_dir = tmp_path / "run"
    cfg = QuantConfig(bits=3, overrides={"fc2": LayerOverride(solver="adaround", solver_params={"lr": -1.0})})
    with pytest.raises(ValueError, match="layer fc2: lr must be > 0"):
        quantize_model(b.model, b.calibration(64, 0), cfg, run_dir=run_dir, progress=False)
    assert not run_dir.exists() or not any(run_dir.iterdir())  # nothing written, no layer done
    with pytest.raises(KeyError, match="layer fc2"):
        quantize_model(b.model, b.calibration(64, 0),
                       QuantConfig(overrides={"fc2": LayerOverride(solver="no-such-solver")}), progress=False)


@pytest.mark.parametrize("argv, match", [
    (["--device", "gpu"], "--device must be cpu, cuda or cuda:N, got 'gpu'"),
    (["--param", "lr=abc"], "parameter lr must be a number (default 0.01), got 'abc'"),
    (["--eval", "whatever.pt"], "--eval applies to a FILE.py:FACTORY model only"),
    (["--value-loss", "attention"], "value_loss='attention': the model (DigitsCNN) has no quantized self-attention"),
])
def test_cli_more_bad_input(argv, match, capsys):
    assert main(["quantize", "--model", "digits", "--bits", "2", "--no-progress", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1


def test_user_model_corrupt_tensor_file_named(tmp_path, capsys):
    model = tmp_path / "m.py"
    model.write_text("import torch\ndef make():\n    return torch.nn.Sequential(torch.nn.Linear(4, 2))\n")
    calib = tmp_path / "calib.pt"
    calib.write_bytes(b"garbage, not a torch file")
    assert main(["quantize", "--model", f"{model}:make", "--calib", str(calib), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"--calib {calib} is not a readable tensor file" in err and len(err.splitlines()) == 1
    assert main(["quantize", "--model", f"{model}:make", "--calib", str(tmp_path / "none.pt"), "--no-progress"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_non_numeric_parameter_refused_by_name():
    from qubo_round.solvers import ParameterError
    with pytest.raises(ParameterError, match="parameter lr must be a number"):
        get_solver("adaround", lr="0.1")
    with pytest.raises(ParameterError, match="parameter num_sweeps must be a number"):
        get_solver("anneal", num_sweeps=None)


def test_corrupt_problem_files_are_one_line_errors(tmp_path, capsys):
    import numpy as np

    from qubo_round.io import load_problem, save_problem
    from qubo_round.problem import DenseQUBO
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="bad.npz is not a readable qubo-round problem file"):
        load_problem(bad)
    good = save_problem(DenseQUBO(Q=np.eye(3)), tmp_path / "good.npz")
    d = dict(np.load(good))
    d.pop("Q")
    np.savez(tmp_path / "noq.npz", **d)
    with pytest.raises(ValueError, match="noq.npz is not a readable.*missing entry"):
        load_problem(tmp_path / "noq.npz")
    assert main(["solve", str(bad), "--solver", "greedy"]) == 2
    err = capsys.readouterr().err.strip()
    assert "bad.npz is not a readable" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("name, text, line", [("G9.txt", "1000000 0\n", 1), ("bqp9.txt", "1\n1000000 0\n", 2),
                                              ("big.qubo", "p qubo 0 1000000 0 0\n", 1)])
def test_huge_instance_header_refused_before_allocating(tmp_path, name, text, line):
    from qubo_round.instances import load_instance
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"{name}, line {line}: 1000000 variables would need a dense"):
        load_instance(str(path) + ("#1" if name.startswith("bqp") else ""))


def test_param_typo_writes_no_run_directory_and_the_fix_reruns(tmp_path, capsys):
    run_dir = tmp_path / "rr"
    base = ["quantize", "--model", "digits", "--bits", "3", "--solver", "greedy", "--calib-samples", "64",
            "--no-progress", "--run-dir", str(run_dir)]
    assert main(base + ["--param", "lrr=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "lrr" in err and len(err.splitlines()) == 1
    assert not run_dir.exists()  # no config.json blocks the corrected rerun
    assert main(base) == 0
    assert (run_dir / "config.json").is_file()


@pytest.mark.parametrize("content, match", [
    ("pair", "must hold a pair"),
    ("garbage", "is not a readable tensor file"),
])
def test_user_model_bad_eval_named_before_the_work(tmp_path, capsys, content, match):
    import torch
    (tmp_path / "m.py").write_text("import torch\n"
                                   "def make():\n"
                                   "    return torch.nn.Sequential(torch.nn.Linear(6, 3))\n")
    torch.save(torch.randn(32, 6), tmp_path / "calib.pt")
    if content == "pair":
        torch.save(torch.randn(8, 6), tmp_path / "e.pt")  # inputs only, no labels
    else:
        (tmp_path / "e.pt").write_bytes(b"\x00not a torch file")
    assert main(["quantize", "--model", f"{tmp_path / 'm.py'}:make", "--calib", str(tmp_path / "calib.pt"),
                 "--eval", str(tmp_path / "e.pt"), "--solver", "greedy", "--no-progress",
                 "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and "e.pt" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()  # refused before the first layer


def test_shipped_instance_solves_from_an_empty_folder(tmp_path):
    """The installed command finds the public instances inside the package, whatever the cwd,
    and writes nothing there."""
    import shutil
    import subprocess
    exe = shutil.which("qubo-round")
    assert exe, "the qubo-round command is not installed"
    r = subprocess.run([exe, "solve", "bqp50-1", "--solver", "tabu"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "energy -2098" in r.stdout  # bqp50-1's best-known value, 2098 (maximisation)
    assert not list(tmp_path.iterdir())


def test_quantize_defaults_come_from_the_model_and_the_command_line_wins():
    from qubo_round.cli import build_parser
    from qubo_round.pipeline.cli import run_config
    from qubo_round.zoo import ModelBundle

    def cfg(*argv, defaults=None):
        return run_config(build_parser().parse_args(["quantize", *argv]), defaults or {})
    minilm = {"solver": "chain/reference-adaround", "reconstruction": "layerwise", "value_loss": "attention"}
    c = cfg(defaults=minilm)
    assert (c.solver, c.reconstruction, c.value_loss) == ("chain/reference-adaround", "layerwise", "attention")
    c = cfg("--solver", "gptq", "--value-loss", "token", defaults=minilm)
    assert (c.solver, c.reconstruction, c.value_loss) == ("gptq", "layerwise", "token")
    c = cfg()  # no model defaults: the library's
    assert (c.solver, c.reconstruction, c.value_loss) == ("adaround", "asymmetric", "token")
    assert c.output_loss == "none"
    assert cfg("--output-loss", "gauss-newton", defaults=minilm).output_loss == "gauss-newton"
    assert cfg("--output-loss", "gauss-newton").reconstruction == "asymmetric"  # with the library's default
    assert ModelBundle.__dataclass_fields__["defaults"].default_factory() == {}
