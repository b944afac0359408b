"""The command line: problem summaries, solving instances and dumped problems, errors."""
import json
import shutil
import subprocess

import pytest

from qubo_round.cli import main


def _json(capsys):
    return json.loads(capsys.readouterr().out)


def test_problem_summary_conv1(capsys):
    assert main(["problem", "--model", "digits", "--layer", "conv1", "--bits", "3", "--json"]) == 0
    s = _json(capsys)
    assert (s["rows"], s["cols"], s["groups"]) == (16, 9, 1)
    assert s["free"] + s["fixed"] == 16 * 9
    assert s["exact_loss"] is not None and 0 <= s["exact_loss"] <= s["nearest_loss"]
    assert s["exact_improvement"] == pytest.approx(1 - s["exact_loss"] / s["nearest_loss"])


def test_problem_summary_markdown_for_grouped_layer(capsys):
    assert main(["problem", "--layer", "conv3", "--bits", "4", "--samples", "32"]) == 0
    out = capsys.readouterr().out
    assert "| groups | 4 |" in out and "not feasible" in out


def test_problem_errors(capsys):
    assert main(["problem", "--layer", "conv9", "--bits", "3"]) == 2
    assert "no layer named 'conv9'" in capsys.readouterr().err
    assert main(["problem", "--layer", "conv1", "--bits", "9"]) == 2
    assert "outside the supported range 2..8" in capsys.readouterr().err
    assert main(["problem", "--model", "resnet", "--layer", "x"]) == 2
    assert "digits" in capsys.readouterr().err


def test_solve_public_instance_json(capsys, qubo_data):
    assert main(["solve", "orlib/bqp50.txt#3", "--solver", "stochastic", "--param", "k=20",
                 "--data-dir", str(qubo_data), "--json"]) == 0
    out = _json(capsys)
    assert {"instance", "solver", "objective", "energy", "seconds", "status"} <= set(out)
    assert out["instance"] == "bqp50-3" and out["objective"] == -out["energy"]


def test_solve_gset_reports_the_cut(capsys, qubo_data):
    assert main(["solve", str(qubo_data / "gset" / "G1.txt"), "--solver", "floor", "--json"]) == 0
    assert _json(capsys)["objective"] == 0  # the empty set cuts nothing


def test_dump_and_solve_exactly(capsys, tmp_path):
    path = tmp_path / "conv1.npz"
    assert main(["problem", "--layer", "conv1", "--bits", "3", "--dump", str(path), "--json"]) == 0
    summary = _json(capsys)
    assert main(["solve", str(path), "--solver", "exact", "--json"]) == 0
    out = _json(capsys)
    assert out["status"] == "optimal"
    assert out["objective"] == pytest.approx(summary["exact_loss"], rel=1e-9)
    assert out["lower_bound"] == pytest.approx(out["energy"])


def test_solve_errors(capsys, qubo_data):
    assert main(["solve", "orlib/bqp50.txt#1", "--solver", "exact", "--data-dir", str(qubo_data)]) == 2
    assert "at most 24 free variables" in capsys.readouterr().err
    assert main(["solve", "orlib/bqp50.txt#1", "--solver", "stochastic", "--param", "kk=1",
                 "--data-dir", str(qubo_data)]) == 2
    assert "no parameter(s) ['kk']" in capsys.readouterr().err
    assert main(["solve", "nope.txt", "--solver", "floor"]) == 2


def test_console_script_is_installed():
    exe = shutil.which("qubo-round")
    assert exe, "the console command qubo-round is not on PATH"
    out = subprocess.run([exe, "solvers"], capture_output=True, text=True, check=True).stdout
    assert "| exact | True | 24 |" in out


_SHORT_PARAMS = {"adaround": ["iterations=200"], "sigmoid-anneal": ["iterations=200"], "ste": ["iterations=200"],
                 "anneal": ["num_sweeps=100"], "neal": ["num_reads=2"], "tabu": ["timeout_ms=20"]}


@pytest.fixture(scope="module")
def conv1_problem(tmp_path_factory):
    path = tmp_path_factory.mktemp("dump") / "conv1.npz"
    assert main(["problem", "--layer", "conv1", "--bits", "2", "--samples", "64", "--dump", str(path),
                 "--json"]) == 0
    return path


def _every_solver():
    from qubo_round.solvers import available_solvers
    return available_solvers()


@pytest.mark.parametrize("solver", _every_solver())
def test_solve_works_with_every_registered_solver(solver, conv1_problem, capsys):
    capsys.readouterr()
    params = [a for p in _SHORT_PARAMS.get(solver, []) for a in ("--param", p)]
    assert main(["solve", str(conv1_problem), "--solver", solver, *params, "--json"]) == 0, capsys.readouterr().err
    out = _json(capsys)
    assert out["solver"] == solver and out["status"] in ("optimal", "feasible", "time_limit")
    assert main(["solve", str(conv1_problem), "--solver", "exact", "--json"]) == 0
    optimum = _json(capsys)["energy"]
    assert out["energy"] >= optimum - 1e-12 * abs(optimum)


def test_solve_with_a_dimod_sampler(conv1_problem, capsys):
    assert main(["solve", str(conv1_problem), "--solver", "dimod:SteepestDescentSolver", "--json"]) == 0
    assert _json(capsys)["solver"] == "dimod:SteepestDescentSolver"
