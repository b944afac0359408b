"""QuantConfig.asymmetric_weight: the blended loss (1 - a) E_layerwise + a E_asymmetric."""
import numpy as np
import pytest
import torch

from qubo_round.pipeline import LayerOverride, QuantConfig, quantize_model
from qubo_round.zoo import load_model


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items() if k.endswith("weight")}


@pytest.fixture(scope="module")
def digits():
    b = load_model("digits")
    return b, b.calibration(256, 0)


def test_weight_zero_is_layerwise_and_one_is_asymmetric(digits):
    b, calib = digits
    run = lambda **kw: quantize_model(b.model, calib, QuantConfig(bits=3, solver="gptq", **kw), progress=False)  # noqa: E731
    lw, lw_rep = run(reconstruction="layerwise")
    a0, a0_rep = run(asymmetric_weight=0.0)
    asym, asym_rep = run()
    a1, _ = run(asymmetric_weight=1.0)
    for k, v in _weights(lw).items():
        assert torch.equal(v, _weights(a0)[k]), k  # the same problems: the float inputs' H only
        assert torch.equal(_weights(asym)[k], _weights(a1)[k]), k
    assert any(not torch.equal(v, _weights(asym)[k]) for k, v in _weights(lw).items())
    half, rep = run(asymmetric_weight=0.5)
    assert rep.loss >= 0 and np.isfinite(rep.loss)
    # the default leaves the fingerprint of earlier run directories unchanged; a blend changes it
    assert "asymmetric_weight" not in QuantConfig().to_dict()
    assert QuantConfig(asymmetric_weight=0.5).fingerprint() != QuantConfig().fingerprint()


@pytest.mark.parametrize("kw, match", [
    (dict(asymmetric_weight=1.5), r"in \[0, 1\]"),
    (dict(asymmetric_weight=True), r"in \[0, 1\]"),
    (dict(asymmetric_weight=0.5, reconstruction="layerwise"), "reconstruction='asymmetric' only"),
    (dict(asymmetric_weight=0.5, form="data"), "data form"),
    (dict(asymmetric_weight=0.5, activation="relu"), "activation-aware"),
    (dict(asymmetric_weight=0.5, overrides={"fc1": LayerOverride(form="data")}), "data form"),
])
def test_bad_weights_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        QuantConfig(**kw)
