"""The embedded default model: a small CNN trained on scikit-learn's bundled digits data.

The digits dataset (``sklearn.datasets.load_digits``) ships inside scikit-learn: 1797 grayscale
8x8 images of handwritten digits with integer pixel values in ``[0, 16]``. Nothing is downloaded.

Everything here is seeded explicitly, and :func:`train_digits` is bitwise reproducible on a given
machine and torch build (single thread, deterministic algorithms, a dedicated ``torch.Generator``).
The shipped checkpoint ``digits_cnn.pt`` is produced by ``python -m qubo_round.models.train_digits``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..threads import limit_threads

__all__ = [
    "CHECKPOINT_NAME",
    "DEFAULT_EPOCHS",
    "METRICS_NAME",
    "RETRAIN_COMMAND",
    "DigitsCNN",
    "DigitsData",
    "calibration_inputs",
    "evaluate",
    "load_digits_data",
    "load_pretrained",
    "train_digits",
]

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "digits_cnn.pt"
METRICS_NAME = "digits_cnn.json"
RETRAIN_COMMAND = "python -m qubo_round.models.train_digits"
DEFAULT_EPOCHS = 50
_PIXEL_SCALE = 16.0
_NUM_CLASSES = 10


class DigitsCNN(nn.Module):
    """Small CNN for 8x8 digits.

    Layers (names are relied upon elsewhere):
    ``conv1`` (1->16, 3x3), ReLU, ``conv2`` (16->32, 3x3), ReLU, max-pool 2 (8x8 -> 4x4),
    ``conv3`` (32->32, 3x3, groups=4), ReLU, flatten (32*4*4 = 512), ``fc1`` (512->64), ReLU,
    ``fc2`` (64->10).

    Input: float tensor ``(N, 1, 8, 8)`` with pixel values divided by 16 (so in ``[0, 1]``).
    Output: logits ``(N, 10)``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 32, 3, padding=1, groups=4)
        self.fc1 = nn.Linear(512, 64)
        self.fc2 = nn.Linear(64, _NUM_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        """Map ``x`` of shape ``(N, 1, 8, 8)`` to logits of shape ``(N, 10)``."""
        x = F.relu(self.conv1(x))  # (N, 16, 8, 8)
        x = F.relu(self.conv2(x))  # (N, 32, 8, 8)
        x = F.max_pool2d(x, 2)  # (N, 32, 4, 4)
        x = F.relu(self.conv3(x))  # (N, 32, 4, 4)
        x = torch.flatten(x, 1)  # (N, 512)
        x = F.relu(self.fc1(x))  # (N, 64)
        return self.fc2(x)  # (N, 10)


@dataclass(frozen=True)
class DigitsData:
    """A stratified train/test split of the digits dataset.

    Attributes:
        x_train: float32 ``(N_train, 1, 8, 8)``, pixels scaled to ``[0, 1]``.
        y_train: int64 ``(N_train,)`` labels in ``0..9``.
        x_test: float32 ``(N_test, 1, 8, 8)``, pixels scaled to ``[0, 1]``.
        y_test: int64 ``(N_test,)`` labels in ``0..9``.
    """

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


def load_digits_data(seed: int = 0) -> DigitsData:
    """Load the bundled digits and split them 70/30, stratified by label.

    Args:
        seed: ``random_state`` of ``sklearn.model_selection.train_test_split``.

    Returns:
        A :class:`DigitsData` with 1257 training and 540 test images.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float32) / _PIXEL_SCALE  # (1797, 8, 8)
    labels = np.asarray(bunch.target, dtype=np.int64)  # (1797,)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=0.3, random_state=seed, stratify=labels
    )
    return DigitsData(
        x_train=torch.from_numpy(np.ascontiguousarray(x_tr)).unsqueeze(1),
        y_train=torch.from_numpy(np.ascontiguousarray(y_tr)),
        x_test=torch.from_numpy(np.ascontiguousarray(x_te)).unsqueeze(1),
        y_test=torch.from_numpy(np.ascontiguousarray(y_te)),
    )


def calibration_inputs(n: int = 256, seed: int = 0, *, split_seed: int = 0) -> Tensor:
    """Draw ``n`` unlabelled calibration inputs from the training split only.

    Args:
        n: number of inputs, ``1 <= n <= N_train``; drawn without replacement.
        seed: seed of the ``torch.Generator`` used for the draw.
        split_seed: seed of the train/test split (0 is the split the shipped model was trained on).

    Returns:
        float32 tensor ``(n, 1, 8, 8)``.

    Raises:
        ValueError: if ``n`` is outside ``[1, N_train]``.
    """
    x_train = load_digits_data(split_seed).x_train
    n_train = x_train.shape[0]
    if not 1 <= n <= n_train:
        raise ValueError(
            f"calibration_inputs: n must be between 1 and the training-split size {n_train}, got n={n}"
        )
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(n_train, generator=gen)[:n]
    return x_train[idx].clone()


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` on inputs ``x`` ``(N, 1, 8, 8)`` and labels ``y`` ``(N,)``.

    The model is evaluated in eval mode; its previous train/eval mode is restored afterwards.

    Returns:
        Accuracy in ``[0, 1]``.
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"evaluate: {x.shape[0]} inputs but {y.shape[0]} labels")
    if x.shape[0] == 0:
        raise ValueError("evaluate: empty input")
    was_training = model.training
    model.eval()
    try:
        correct = 0
        for start in range(0, x.shape[0], batch_size):
            logits = model(x[start : start + batch_size])
            correct += int((logits.argmax(dim=1) == y[start : start + batch_size]).sum())
    finally:
        model.train(was_training)
    return correct / x.shape[0]


@contextlib.contextmanager
def _deterministic_single_thread() -> Iterator[None]:
    """Enable deterministic algorithms and one intra-op thread; restore both on exit."""
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        with limit_threads(1, blas=False):
            yield
    finally:
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)


def _random_shift(x: Tensor, gen: torch.Generator, max_shift: int = 1) -> Tensor:
    """Shift each image of ``x`` ``(N, 1, 8, 8)`` by a random offset in ``[-max_shift, max_shift]``
    along both axes, filling with zeros. Returns a new ``(N, 1, 8, 8)`` tensor."""
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)  # (N, 1, h + 2s, w + 2s)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]  # (N, h, 1)
    cols = (dx[:, None] + torch.arange(w))[:, None, :]  # (N, 1, w)
    batch = torch.arange(n)[:, None, None]  # (N, 1, 1)
    return padded[batch, 0, rows, cols].unsqueeze(1)  # (N, 1, h, w)


def _train_epoch(
    model: DigitsCNN,
    opt: torch.optim.Optimizer,
    data: DigitsData,
    gen: torch.Generator,
    batch_size: int,
    augment: bool,
) -> float:
    """One pass over the shuffled training split; returns the mean training loss."""
    model.train()
    n = data.x_train.shape[0]
    perm = torch.randperm(n, generator=gen)
    total = 0.0
    for start in range(0, n, batch_size):
        idx = perm[start : start + batch_size]
        xb, yb = data.x_train[idx], data.y_train[idx]
        if augment:
            xb = _random_shift(xb, gen)
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float(loss.detach()) * idx.numel()
    return total / n


def train_digits(
    seed: int = 0,
    epochs: int = DEFAULT_EPOCHS,
    *,
    lr: float = 2e-3,
    weight_decay: float = 0.0,
    batch_size: int = 32,
    augment: bool = True,
) -> tuple[DigitsCNN, dict[str, Any]]:
    """Train a :class:`DigitsCNN` from scratch, reproducibly.

    ``seed`` drives the train/test split, the weight initialisation, the shuffling and the
    augmentation (random 1-pixel shifts). Training runs single-threaded with deterministic
    algorithms; the global settings are restored afterwards. Adam with a cosine learning-rate decay.

    Args:
        seed: the only source of randomness.
        epochs: passes over the 1257 training images.
        lr: peak Adam learning rate.
        weight_decay: Adam weight decay.
        batch_size: mini-batch size.
        augment: apply random 1-pixel shifts to the training batches.

    Returns:
        ``(model, metrics)``: the model in eval mode and a dict with ``test_accuracy``,
        ``train_accuracy``, ``epochs``, ``seed``, ``train_seconds``, ``n_train``, ``n_test``.
    """
    if epochs < 1:
        raise ValueError(f"train_digits: epochs must be >= 1, got {epochs}")
    data = load_digits_data(seed)
    t0 = time.perf_counter()
    with _deterministic_single_thread():
        torch.manual_seed(seed)
        model = DigitsCNN()
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
        for epoch in range(epochs):
            loss = _train_epoch(model, opt, data, gen, batch_size, augment)
            sched.step()
            logger.debug("epoch %d/%d: train loss %.4f", epoch + 1, epochs, loss)
        model.eval()
        test_acc = evaluate(model, data.x_test, data.y_test)
        train_acc = evaluate(model, data.x_train, data.y_train)
    seconds = time.perf_counter() - t0
    logger.info(
        "trained DigitsCNN (seed=%d, epochs=%d) in %.1fs: test accuracy %.4f",
        seed, epochs, seconds, test_acc,
    )
    metrics: dict[str, Any] = {
        "test_accuracy": test_acc,
        "train_accuracy": train_acc,
        "epochs": epochs,
        "seed": seed,
        "train_seconds": seconds,
        "n_train": int(data.x_train.shape[0]),
        "n_test": int(data.x_test.shape[0]),
    }
    return model, metrics


def load_pretrained() -> DigitsCNN:
    """Load the shipped checkpoint ``qubo_round/models/digits_cnn.pt`` (eval mode, CPU).

    Raises:
        FileNotFoundError: if the checkpoint is not installed; it names the retrain command.
    """
    resource = resources.files(__package__).joinpath(CHECKPOINT_NAME)
    if not resource.is_file():
        raise FileNotFoundError(
            f"pretrained digits checkpoint {CHECKPOINT_NAME!r} not found in package "
            f"{__package__!r}; create it with `{RETRAIN_COMMAND}`"
        )
    with resources.as_file(resource) as path:
        state = torch.load(path, map_location="cpu", weights_only=True)
    model = DigitsCNN()
    model.load_state_dict(state)
    model.eval()
    return model
