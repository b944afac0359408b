"""A tiny randomly initialised BERT (transformers, eager attention) and calibration batches for
the tests of the attention-mixed value loss (:mod:`qubo_round.attention`)."""
from __future__ import annotations

import torch
from torch import nn

HIDDEN, HEADS, VOCAB = 32, 4, 40


class TinyEncoder(nn.Module):
    """``(input_ids, attention_mask) -> last hidden state`` of a 2-block BERT."""

    def __init__(self, attn_implementation: str = "eager", seed: int = 0) -> None:
        super().__init__()
        from transformers import BertConfig, BertModel
        cfg = BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=HEADS,
                         intermediate_size=48, max_position_embeddings=24, attn_implementation=attn_implementation)
        torch.manual_seed(seed)
        self.bert = BertModel(cfg, add_pooling_layer=False).eval()

    def forward(self, input_ids, attention_mask):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def batches(seed: int = 0, n: int = 4, padded: bool = True) -> list[dict[str, torch.Tensor]]:
    """``n`` batches of 3-6 sequences of 5-12 tokens; with ``padded`` some end in padding."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        B = int(torch.randint(3, 7, (1,), generator=g))
        T = int(torch.randint(5, 13, (1,), generator=g))
        mask = torch.ones(B, T, dtype=torch.long)
        if padded:
            for b in range(B):
                mask[b, int(torch.randint(2, T + 1, (1,), generator=g)):] = 0
        out.append({"input_ids": torch.randint(0, VOCAB, (B, T), generator=g), "attention_mask": mask})
    return out


def contexts(model: nn.Module, site: str, data) -> list[torch.Tensor]:
    """The attention module ``site``'s context outputs (batch, tokens, hidden), float64, per batch."""
    got = []
    h = dict(model.named_modules())[site].register_forward_hook(lambda m, i, o: got.append(o[0].double()))
    try:
        with torch.no_grad():
            for b in data:
                model(**b)
    finally:
        h.remove()
    return got
