"""Smoke test of the bits-granularity study in quick mode, with properties that could fail."""
from __future__ import annotations

from study_helpers import assert_files, quick_study, read_rows as _rows, rerun


study = quick_study("bits-granularity")


def test_files_and_rows(study):
    tmp, md = study
    assert_files(tmp, ("bits-granularity.md", "digits_runs.csv", "digits_summary.csv", "digits_accuracy.png"))
    text = md.read_text()
    assert "Digits: test accuracy" in text
    assert "Skipped in quick mode" in text  # MiniLM is not loaded in quick mode, and says so
    summary = _rows(tmp / "digits_summary.csv")
    assert {(r["method"], r["granularity"]) for r in summary} == {
        (m, g) for m in ("nearest", "gptq") for g in ("tensor", "channel")}
    for r in summary:
        assert 0.0 <= float(r["mean"]) <= 100.0 and float(r["std"]) >= 0.0
        assert int(r["runs"]) == (1 if r["method"] == "nearest" else 2)


def test_runs_and_seeds(study):
    tmp, _ = study
    runs = _rows(tmp / "digits_runs.csv")
    gptq = [r for r in runs if r["method"] == "gptq"]
    assert {r["seed"] for r in gptq} == {"0", "1"}
    for r in gptq:
        # GPTQ never ends above nearest's reconstruction loss (it starts from it and only improves)
        assert float(r["loss"]) < float(r["nearest_loss"])
    acc = {(r["method"], r["granularity"]): float(r["mean"]) for r in _rows(tmp / "digits_summary.csv")}
    for g in ("tensor", "channel"):  # at 2 bits nearest collapses; GPTQ recovers most of it
        assert acc[("gptq", g)] > acc[("nearest", g)] + 10.0


def test_cached_rerun_is_identical(study):
    tmp, _ = study
    out2 = tmp / "again"
    md2 = rerun("bits-granularity", tmp, out2)
    assert "0 cells computed" in md2.read_text()
    for n in ("digits_runs.csv", "digits_summary.csv"):
        assert (out2 / n).read_text() == (tmp / n).read_text(), n
