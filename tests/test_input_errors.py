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
    (["--param", "iterations=True"], "iterations must be a positive integer, got True"),
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
