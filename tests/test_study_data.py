"""Study ``data`` (paper Fig. 4) in quick mode: files, rows, calibration domains, caching."""

import torch

from qubo_round.studies.common import Lab
from qubo_round.studies.data import DOMAINS, calibration_set

from study_helpers import assert_files, quick_study, read_rows as _rows, rerun


study = quick_study("data")


def test_domains_are_valid_and_deterministic():
    lab = Lab()
    digits = calibration_set(lab, "digits", 32, 3)
    for d in DOMAINS:
        x = calibration_set(lab, d, 32, 3)
        assert x.shape == (32, 1, 8, 8) and x.dtype == torch.float32
        assert float(x.min()) >= 0 and float(x.max()) <= 1
        assert torch.equal(x, calibration_set(lab, d, 32, 3))
        assert d == "digits" or not torch.equal(x, digits)
        assert not torch.equal(x, calibration_set(lab, d, 32, 4))
    assert torch.equal(calibration_set(lab, "inverted", 32, 3), 1 - digits)
    assert torch.equal(calibration_set(lab, "transposed", 32, 3), digits.transpose(-1, -2))


def test_files_and_rows(study):
    out, path = study
    assert_files(out, ("data.md", "runs.csv", "samples.csv", "domains.csv", "samples.png"))
    samples = _rows(out / "samples.csv")
    assert [int(r["calibration samples"]) for r in samples] == [16, 64]
    domains = _rows(out / "domains.csv")
    assert len(domains) == len(DOMAINS)
    assert domains[0]["adaround − in-domain"] == "+0.00"
    # the in-domain row is the same cell as the sample curve's point at that size
    assert domains[0]["adaround accuracy %"] == samples[-1]["adaround accuracy %"]
    assert "±" in path.read_text()


def test_properties(study):
    out, _ = study
    runs = {(r["method"], r["domain"], int(r["n"])): r for r in _rows(out / "runs.csv")}
    acc = lambda m, d, n: float(runs[m, d, n]["accuracy"])  # noqa: E731
    # in-domain data beat random noise images, whose statistics are nothing like the digits'
    assert acc("adaround", "uniform", 64) < acc("adaround", "digits", 64) - 0.05
    for r in runs.values():
        assert 0 <= float(r["accuracy"]) <= 1 and float(r["loss"]) >= 0


def test_cache_reuse_gives_identical_csv(study, tmp_path):
    out, _ = study
    again = rerun("data", out, tmp_path)
    assert "0 cells computed" in again.read_text()
    for name in ("runs.csv", "samples.csv", "domains.csv"):
        assert (tmp_path / name).read_text() == (out / name).read_text()
