"""The float network's layer inputs captured once per run (``FloatInputs``) and the early end of the
quantized network's pass give the same statistics, bit for bit, as a float pass per layer; a
tensor modified in place after a layer read it, and a layer called twice per forward pass, are
handled correctly."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from qubo_round.pipeline import quantize_model
from qubo_round.pipeline.config import QuantConfig
from qubo_round.stats import FinishedOutputs, FloatInputs, capture_stats


class _Net(nn.Module):
    """Token embedding, a shared input read by three projections (like attention's q, k, v), a
    conv over the sequence, and a head; dict batches."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(20, 8)
        self.q, self.k, self.v = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)
        self.conv = nn.Conv1d(8, 6, 3, padding=1)
        self.head = nn.Linear(6, 4)

    def forward(self, input_ids, attention_mask):
        h = self.emb(input_ids) * attention_mask[..., None]
        a = torch.softmax(self.q(h) @ self.k(h).transpose(1, 2), -1) @ self.v(h)
        c = torch.relu(self.conv((h + a).transpose(1, 2))).transpose(1, 2)
        return self.head(c).mean(1)


def _batches(n=3):
    g = torch.Generator().manual_seed(1)
    return [{"input_ids": torch.randint(0, 20, (5, 7), generator=g),
             "attention_mask": (torch.rand(5, 7, generator=g) > 0.2).float()} for _ in range(n)]


def _perturbed(m):
    q = copy.deepcopy(m)
    with torch.no_grad():
        for p in q.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    return q


def _same(a, b):
    assert a.keys() == b.keys()
    for n in a:
        assert a[n].count == b[n].count
        for x, y in zip(a[n].groups, b[n].groups):
            for attr in ("H", "H_hat", "C"):
                np.testing.assert_array_equal(getattr(x, attr), getattr(y, attr))


NAMES = ["q", "k", "v", "conv", "head"]


@pytest.mark.parametrize("budget", [float("inf"), 1.0])
def test_cached_float_inputs_give_identical_statistics(budget):
    m, batches = _Net().eval(), _batches()
    q = _perturbed(m)
    fi = FloatInputs(m, NAMES, batches, budget)
    for name in NAMES:
        ref = capture_stats(m, [name], batches, model_hat=q)
        _same(capture_stats(m, [name], batches, model_hat=q, float_inputs=fi), ref)
    # a budget that holds everything needs one float pass for the whole run; one that holds
    # nothing gives up after one (partial) pass and runs the float network per layer
    assert fi.passes == 1 and fi.held_bytes() == 0
    assert fi.enabled == (budget == float("inf"))
    assert not any(mod._forward_hooks for mod in list(m.modules()) + list(q.modules()))


def test_budget_for_a_few_layers_takes_several_passes():
    m, batches = _Net().eval(), _batches()
    q = _perturbed(m)
    one_batch = 5 * 7 * 8 * 4  # bytes of the shared (5, 7, 8) float32 input of q, k, v
    fi = FloatInputs(m, NAMES, batches, 3 * one_batch)  # q, k, v (one shared tensor), not conv's
    for name in NAMES:
        _same(capture_stats(m, [name], batches, model_hat=q, float_inputs=fi),
              capture_stats(m, [name], batches, model_hat=q))
    assert fi.passes == 3  # {q, k, v}, {conv}, {head}


def test_quantized_pass_ends_after_the_layer():
    m, batches = _Net().eval(), _batches()
    q = _perturbed(m)
    seen = []
    q.head.register_forward_hook(lambda *_: seen.append(1))
    capture_stats(m, ["q"], batches, model_hat=q, float_inputs=FloatInputs(m, ["q"], batches, float("inf")))
    capture_stats(m, ["k"], batches, model_hat=q)
    assert seen == []  # the quantized network never reached its head
    capture_stats(m, ["head"], batches, model_hat=q)
    assert len(seen) == len(batches)


class _InPlace(nn.Module):
    """fc1's input is modified in place after fc1 read it (a residual update)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2 = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = x * 1.0
        h.add_(self.fc1(h))
        return self.fc2(h)


@pytest.mark.parametrize("cached", [False, True])
def test_input_modified_in_place_after_the_layer(cached):
    m = _InPlace().eval()
    q = _perturbed(m)
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(2))
    fi = FloatInputs(m, ["fc1"], [x], float("inf")) if cached else None
    acc = capture_stats(m, ["fc1"], [x], model_hat=q, float_inputs=fi)["fc1"].groups[0]
    xd = x.double().numpy()  # fc1 reads x (times 1) in both networks
    np.testing.assert_allclose(acc.H, xd.T @ xd / 16, rtol=1e-6)
    np.testing.assert_allclose(acc.C, xd.T @ xd / 16, rtol=1e-6)


class _Shared(nn.Module):
    """One Linear applied twice per forward pass (weight sharing)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.pre, self.fc = nn.Linear(3, 3), nn.Linear(3, 3)

    def forward(self, x):
        return self.fc(torch.tanh(self.fc(self.pre(x))))


@pytest.mark.parametrize("cached", [False, True])
def test_layer_called_twice_pairs_the_calls(cached):
    m = _Shared().eval()
    q = _perturbed(m)
    x = torch.randn(10, 3, generator=torch.Generator().manual_seed(3))
    fi = FloatInputs(m, ["fc"], [x], float("inf")) if cached else None
    acc = capture_stats(m, ["fc"], [x], model_hat=q, float_inputs=fi)["fc"].groups[0]
    with torch.no_grad():
        a1 = m.pre(x); a2 = torch.tanh(m.fc(a1))
        b1 = q.pre(x); b2 = torch.tanh(q.fc(b1))
    X, Xh = torch.cat([a1, a2]).double().numpy(), torch.cat([b1, b2]).double().numpy()
    assert acc.count == 20
    np.testing.assert_allclose(acc.H, X.T @ X / 20, rtol=1e-6)
    np.testing.assert_allclose(acc.H_hat, Xh.T @ Xh / 20, rtol=1e-6)
    np.testing.assert_allclose(acc.C, Xh.T @ X / 20, rtol=1e-6)


def test_quantize_model_identical_for_any_budget():
    m, batches = _Net().eval(), _batches()
    runs = []
    for budget_mb in (2048.0, 0.0025, 0.0):  # everything, a few layers at a time, nothing
        cfg = QuantConfig(bits=3, solver="gptq", ram_budget_mb=budget_mb)
        qm, rep = quantize_model(m, batches, cfg, progress=False)
        runs.append((qm.state_dict(), [(r.name, r.loss, r.nearest_loss) for r in rep.layers]))
    for sd, rows in runs[1:]:
        assert rows == runs[0][1]
        for k in sd:
            assert torch.equal(sd[k], runs[0][0][k]), k


# ------------------------------------------------------------------ finished submodules replayed

class _Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.fc1, self.fc2, self.norm = nn.Linear(d, 2 * d), nn.Linear(2 * d, d), nn.LayerNorm(d)

    def forward(self, x, mask):
        return self.norm(x + self.fc2(torch.relu(self.fc1(x)))) * mask[..., None]


class _Deep(nn.Module):
    """Embedding, three blocks called with a mask, a head; ``in_place`` adds to each block's
    output in place (so a held output must not be handed out again)."""

    def __init__(self, in_place=False):
        super().__init__()
        torch.manual_seed(0)
        self.in_place = in_place
        self.emb = nn.Embedding(20, 8)
        self.blocks = nn.ModuleList([_Block(8) for _ in range(3)])
        self.head = nn.Linear(8, 4)

    def forward(self, input_ids, attention_mask):
        h = self.emb(input_ids)
        for b in self.blocks:
            h = b(h, attention_mask)
            if self.in_place:
                h.add_(0.1)
        return self.head(h).mean(1)


def _layer_by_layer(m, batches, replay_budget, fi_budget):
    """Capture each layer's statistics in order, 'quantizing' it (a fixed perturbation) after."""
    q = copy.deepcopy(m)
    names = [n for n, mod in m.named_modules() if isinstance(mod, nn.Linear)]
    replay = FinishedOutputs(q, names, replay_budget) if replay_budget is not None else None
    fi = FloatInputs(m, names, batches, fi_budget) if fi_budget is not None else None
    out = {}
    try:
        for n in names:
            out.update(capture_stats(m, [n], batches, model_hat=q, float_inputs=fi, replay=replay))
            with torch.no_grad():
                w = q.get_submodule(n).weight
                w.add_(0.03 * torch.randn(w.shape, generator=torch.Generator().manual_seed(len(n))))
            if replay is not None:
                replay.finish(n)
    finally:
        if replay is not None:
            replay.close()
    return out, replay, q


@pytest.mark.parametrize("in_place", [False, True])
def test_replayed_finished_modules_give_identical_statistics(in_place):
    m, batches = _Deep(in_place).eval(), _batches()
    ref, _, _ = _layer_by_layer(m, batches, None, None)
    fast, replay, q = _layer_by_layer(m, batches, float("inf"), float("inf"))
    _same(fast, ref)
    if in_place:  # every held block output was changed by its receiver: never handed out
        assert replay.hits > 0  # (the embedding's output is not changed)
    else:
        # emb: 3 batches x 6 passes after the first; finished blocks and layers replayed too
        assert replay.hits >= 3 * 6
    assert replay.held_bytes() == 0
    assert not any("forward" in vars(mod) for mod in q.modules())  # close() restored them


def test_replay_compares_arguments():
    blk = _Block(4).eval()
    root = nn.Sequential(blk)  # blk is a finished child of the root
    replay = FinishedOutputs(root, [], float("inf"))
    x = torch.randn(2, 3, 4)
    mask = torch.ones(2, 3)
    replay._begin(0)
    with torch.no_grad():
        a = blk(x, mask)
        replay._begin(0)
        assert blk(x.clone(), mask.clone()) is a  # equal arguments: replayed
        replay._begin(0)
        b = blk(x + 1, mask)  # other values: computed
        replay._begin(0)
        c = blk(x.transpose(0, 1).contiguous().transpose(0, 1), mask)  # other strides: computed
    replay._end()
    assert replay.hits == 1 and replay.misses == 3
    assert not torch.equal(a, b) and torch.equal(c, a)
    with torch.no_grad():
        assert blk(x, mask) is not a  # inactive outside capture_stats: plain forward
    replay.close()
    assert "forward" not in vars(blk)


class _Sum(nn.Module):
    def forward(self, xs, as_list=False):
        total = sum(xs[1:], xs[0])
        return [total] if as_list else (total,)


def test_replay_snapshots_arguments_and_never_hands_out_lists():
    f = _Sum()
    replay = FinishedOutputs(nn.Sequential(f), [], float("inf"))
    a, b = torch.ones(3), torch.full((3,), 2.0)
    args = [a]
    replay._begin(0)
    out1 = f(args)
    args.append(b)  # the caller changes its list after the call
    replay._begin(0)
    out2 = f([a, b])  # equal to the changed list, not to what was computed on: computed
    assert torch.equal(out1[0], a) and torch.equal(out2[0], a + b) and replay.hits == 0
    replay._begin(0)
    assert f([a, b]) is out2 and replay.hits == 1  # a tuple of tensors: replayed
    replay._begin(1)
    first = f([a], as_list=True)
    replay._begin(1)
    assert f([a], as_list=True) is not first and replay.hits == 1  # a list (mutable): never held
    replay._end()
    replay.close()
