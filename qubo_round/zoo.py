"""A tiny model zoo: named factories that build a model plus its calibration and evaluation data.

Each entry is a zero-argument factory returning a :class:`ModelBundle`. Factories are called on
every :func:`load_model`, so each caller gets a fresh model it may modify (e.g. round in place).

Register further models the same way as ``"digits"`` below::

    register_model("my-model", my_factory)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor, nn

from .registry import Registry, UnknownNameError

__all__ = [
    "ModelBundle",
    "UnknownModelError",
    "available_models",
    "load_model",
    "register_model",
]


@dataclass(frozen=True)
class ModelBundle:
    """A model with the data needed to quantise and assess it.

    Attributes:
        name: registry name.
        model: the network, in eval mode.
        calibration: ``(n, seed) -> inputs``, ``n`` seeded unlabelled inputs: a tensor (for
            digits: float32 ``(n, 1, 8, 8)``) or a list of batches (dicts of tensors for MiniLM).
        evaluation: ``() -> (inputs, labels)``, the held-out evaluation set of a classifier
            (for digits: ``(540, 1, 8, 8)`` float32 and ``(540,)`` int64), or None.
        description: one-line human-readable description.
        score: ``model -> {metric: value}`` for models that are not plain classifiers; None means
            top-1 accuracy on ``evaluation``.
        metric: the name of the headline metric in ``score``'s dict.
        defaults: the :class:`~qubo_round.pipeline.QuantConfig` fields ``qubo-round quantize``
            uses for this model where the command line does not give them (the configuration
            measured best on it); empty: the library's defaults.
    """

    name: str
    model: nn.Module
    calibration: Callable[[int, int], object]
    evaluation: Callable[[], tuple[Tensor, Tensor]] | None
    description: str
    score: Callable[[nn.Module], dict[str, float]] | None = None
    metric: str = "accuracy"
    defaults: dict = field(default_factory=dict)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Metrics of ``model`` (for classifiers: ``{"accuracy": top-1 in [0, 1]}``)."""
        if self.score is not None:
            return self.score(model)
        import torch
        x, y = self.evaluation()
        with torch.no_grad():
            pred = torch.cat([model(b).argmax(-1) for b in torch.split(x, 512)])
        return {"accuracy": float((pred == y).float().mean())}


class UnknownModelError(UnknownNameError):
    """Raised by :func:`load_model` for a name that is not registered."""


ModelFactory = Callable[[], ModelBundle]

_REGISTRY: Registry[ModelFactory] = Registry("model", error=UnknownModelError)


def register_model(name: str, factory: ModelFactory) -> None:
    """Register ``factory`` (zero-arg, returns a :class:`ModelBundle`) under ``name``.

    Raises:
        ValueError: if ``name`` is empty or already registered.
        TypeError: if ``factory`` is not callable.
    """
    if not callable(factory):
        raise TypeError(f"register_model: factory for {name!r} is not callable")
    _REGISTRY.register(name, factory)


def available_models() -> list[str]:
    """Sorted names of all registered models."""
    return sorted(_REGISTRY.names())


def load_model(name: str) -> ModelBundle:
    """Build the bundle registered under ``name``.

    Raises:
        UnknownModelError: if ``name`` is not registered; the message lists the available names.
    """
    bundle = _REGISTRY.get(name)()
    if not isinstance(bundle, ModelBundle):
        raise TypeError(f"factory for {name!r} returned {type(bundle).__name__}, not ModelBundle")
    return bundle


def _digits_evaluation() -> tuple[Tensor, Tensor]:
    """Test split of the digits data: ``(540, 1, 8, 8)`` float32 inputs, ``(540,)`` int64 labels."""
    from qubo_round.models.digits import load_digits_data

    data = load_digits_data(seed=0)
    return data.x_test, data.y_test


def _digits_calibration(n: int, seed: int) -> Tensor:
    """``n`` training-split inputs ``(n, 1, 8, 8)`` drawn with ``seed``."""
    from qubo_round.models.digits import calibration_inputs

    return calibration_inputs(n, seed)


def _digits_factory() -> ModelBundle:
    from qubo_round.models.digits import load_pretrained

    return ModelBundle(
        name="digits",
        model=load_pretrained(),
        calibration=_digits_calibration,
        evaluation=_digits_evaluation,
        description="DigitsCNN (conv1-conv3, fc1-fc2; ~40k parameters) on sklearn digits 8x8",
    )


register_model("digits", _digits_factory)


def _minilm_factory() -> ModelBundle:
    from qubo_round.models import minilm

    model = minilm.load_minilm()
    eval_batches = minilm.evaluation_batches()
    reference = minilm.embed(model, eval_batches)

    def score(m: nn.Module) -> dict[str, float]:
        a = minilm.agreement(reference, minilm.embed(m, eval_batches))
        return {"mean_cosine": a.mean_cosine, "nn_top1": a.nn_top1, "nn_top10_overlap": a.nn_top10_overlap,
                "mean_cosine_se": a.mean_cosine_se, "nn_top1_se": a.nn_top1_se,
                "nn_top10_overlap_se": a.nn_top10_overlap_se}

    return ModelBundle(
        name="minilm", model=model, calibration=minilm.calibration_batches, evaluation=None,
        description="all-MiniLM-L6-v2 sentence encoder (pretrained, offline; extra 'minilm'); "
                    "metric: cosine similarity to the float embeddings",
        score=score, metric="mean_cosine",
        # benchmarks/results/minilm_default.md: act-order GPTQ's rounding refined by 50 steps of
        # the relaxation, every layer on the float network's inputs, the value projections on the
        # loss after their heads' attention mixing
        defaults={"solver": "chain/reference-adaround", "reconstruction": "layerwise", "value_loss": "attention"})


register_model("minilm", _minilm_factory)
