"""Tests for the embedded digits CNN, its shipped checkpoint and the model zoo."""

from __future__ import annotations

import json
from importlib import resources

import pytest
import torch

from qubo_round import zoo
from qubo_round.models import digits
from qubo_round.models.digits import (
    CHECKPOINT_NAME,
    METRICS_NAME,
    DigitsCNN,
    calibration_inputs,
    evaluate,
    load_digits_data,
    load_pretrained,
    train_digits,
)

SHORT_EPOCHS = 2


def _resource(name: str):
    return resources.files("qubo_round.models").joinpath(name)


@pytest.fixture(scope="module")
def data() -> digits.DigitsData:
    return load_digits_data(seed=0)


@pytest.fixture(scope="module")
def shipped_metrics() -> dict:
    return json.loads(_resource(METRICS_NAME).read_text())


def _assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"tensor {key} differs"


# --------------------------------------------------------------------------- model and data


def test_architecture_shapes_and_layer_names() -> None:
    model = DigitsCNN()
    names = {name for name, _ in model.named_children()}
    assert names == {"conv1", "conv2", "conv3", "fc1", "fc2"}
    assert model.conv3.groups == 4
    assert tuple(model.fc1.weight.shape) == (64, 512)
    assert tuple(model(torch.zeros(3, 1, 8, 8)).shape) == (3, 10)


def test_data_split(data: digits.DigitsData) -> None:
    assert data.x_train.shape == (1257, 1, 8, 8)
    assert data.x_test.shape == (540, 1, 8, 8)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert 0.0 <= float(data.x_train.min()) and float(data.x_train.max()) <= 1.0
    # Stratified: every class appears in both splits.
    assert set(data.y_test.tolist()) == set(range(10)) == set(data.y_train.tolist())


# --------------------------------------------------------------------------- shipped checkpoint


def test_shipped_checkpoint_exists_and_is_small() -> None:
    resource = _resource(CHECKPOINT_NAME)
    assert resource.is_file()
    assert len(resource.read_bytes()) < 1_000_000


def test_pretrained_accuracy(data: digits.DigitsData, shipped_metrics: dict) -> None:
    model = load_pretrained()
    assert not model.training
    acc = evaluate(model, data.x_test, data.y_test)
    assert acc >= 0.97
    assert acc == shipped_metrics["test_accuracy"]


def test_load_pretrained_missing_file_names_retrain_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(digits, "CHECKPOINT_NAME", "does_not_exist.pt")
    with pytest.raises(FileNotFoundError, match="qubo_round.models.train_digits"):
        load_pretrained()


# --------------------------------------------------------------------------- training


def test_training_is_bitwise_reproducible_and_seed_dependent() -> None:
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    model_a, metrics_a = train_digits(seed=0, epochs=SHORT_EPOCHS)
    model_b, metrics_b = train_digits(seed=0, epochs=SHORT_EPOCHS)
    model_c, _ = train_digits(seed=1, epochs=SHORT_EPOCHS)
    _assert_same_state(model_a.state_dict(), model_b.state_dict())
    assert metrics_a["test_accuracy"] == metrics_b["test_accuracy"]
    assert metrics_a["epochs"] == SHORT_EPOCHS and metrics_a["seed"] == 0
    assert not torch.equal(model_a.fc1.weight, model_c.fc1.weight)
    # Global torch settings are restored.
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == deterministic


def test_full_retrain_reproduces_shipped_checkpoint(shipped_metrics: dict, data: digits.DigitsData) -> None:
    # Full default training takes ~10 s on 2 CPU cores, so the real thing is checked here.
    # Bitwise reproducibility is promised on one machine only (the test above): the bits depend on
    # torch's SIMD kernels, oneDNN's and MKL's code paths, which follow the CPU model, and 50 epochs
    # amplify every rounding difference. `python benchmarks/digits_retrain_kernels.py` forces each
    # of them on one machine: every forced path gives other weights (one with the same torch
    # capability, MKL's alone), at 98.9-99.3% against the shipped 99.07%. So across machines the
    # retrain must match the shipped model as a classifier: accuracy within 1 point (5.4 images)
    # and the same prediction on at least 97% of the test images.
    if shipped_metrics["torch_version"] != torch.__version__:
        pytest.skip(
            f"checkpoint trained with torch {shipped_metrics['torch_version']}, "
            f"running {torch.__version__}"
        )
    model, metrics = train_digits(
        seed=shipped_metrics["seed"], epochs=shipped_metrics["epochs"]
    )
    shipped = load_pretrained()
    assert abs(metrics["test_accuracy"] - shipped_metrics["test_accuracy"]) <= 0.01
    with torch.no_grad():
        same = (model(data.x_test).argmax(1) == shipped(data.x_test).argmax(1)).float().mean()
    assert float(same) >= 0.97


# --------------------------------------------------------------------------- calibration


def test_calibration_inputs_seeded(data: digits.DigitsData) -> None:
    a = calibration_inputs(64, seed=3)
    b = calibration_inputs(64, seed=3)
    c = calibration_inputs(64, seed=4)
    assert a.shape == (64, 1, 8, 8) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # Every drawn input is a training image (rows compared flattened: (64, 1, 64) vs (1, 1257, 64)).
    matches = (a.flatten(1)[:, None, :] == data.x_train.flatten(1)[None, :, :]).all(dim=2)
    assert bool(matches.any(dim=1).all())
    full = calibration_inputs(data.x_train.shape[0], seed=0)
    assert full.shape == data.x_train.shape


@pytest.mark.parametrize("n", [0, -1, 1258])
def test_calibration_inputs_rejects_bad_n(n: int) -> None:
    with pytest.raises(ValueError, match="between 1 and"):
        calibration_inputs(n)


# --------------------------------------------------------------------------- zoo


def test_zoo_loads_digits(data: digits.DigitsData) -> None:
    assert "digits" in zoo.available_models()
    bundle = zoo.load_model("digits")
    assert isinstance(bundle, zoo.ModelBundle)
    assert bundle.name == "digits"
    assert isinstance(bundle.model, DigitsCNN)
    assert bundle.calibration(16, 0).shape == (16, 1, 8, 8)
    assert torch.equal(bundle.calibration(16, 0), calibration_inputs(16, 0))
    x, y = bundle.evaluation()
    assert torch.equal(x, data.x_test) and torch.equal(y, data.y_test)
    assert evaluate(bundle.model, x, y) >= 0.97


def test_zoo_unknown_model_lists_available() -> None:
    with pytest.raises(zoo.UnknownModelError, match="digits") as info:
        zoo.load_model("no-such-model")
    assert isinstance(info.value, KeyError)


def test_zoo_duplicate_registration_raises() -> None:
    with pytest.raises(ValueError, match="already registered"):
        zoo.register_model("digits", lambda: zoo.load_model("digits"))


def test_zoo_register_new_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zoo, "_REGISTRY", zoo._REGISTRY.copy())
    x = torch.zeros(4, 1, 8, 8)
    y = torch.zeros(4, dtype=torch.int64)
    zoo.register_model(
        "toy",
        lambda: zoo.ModelBundle(
            name="toy",
            model=DigitsCNN().eval(),
            calibration=lambda n, seed: torch.zeros(n, 1, 8, 8),
            evaluation=lambda: (x, y),
            description="untrained",
        ),
    )
    assert {"digits", "toy"} <= set(zoo.available_models())
    assert zoo.available_models() == sorted(zoo.available_models())
    assert zoo.load_model("toy").name == "toy"
