"""Studies: the paper's research questions answered again on the models that run here.

Each study is one command, ``qubo-round study NAME [--quick] [--seed S]``, that writes a
Markdown report (``NAME.md``), its rows as CSV (pandas reads them) and PNG plots into
``studies/results/NAME/`` (``--quick``: ``runs/studies-quick/NAME/``). Studies are registered by
module path and imported only when run, so ``qubo-round study --list`` stays fast.

Writing a study: a module with ``run(ctx: StudyContext) -> None`` that adds tables, text and
figures to ``ctx`` (see :mod:`qubo_round.studies.common`), registered in ``STUDIES`` below.
"""
from __future__ import annotations

import importlib
from typing import Callable

__all__ = ["STUDIES", "available_studies", "get_study", "UnknownStudyError"]

# name -> (module, one-line question)
STUDIES: dict[str, tuple[str, str]] = {
    "rounding-choice": ("qubo_round.studies.rounding_choice",
                        "Which rounding of the weights is best: nearest, floor/ceil, stochastic, the QUBOs solved, or the relaxation? (paper Tables 1-2)"),
    "cost-vs-accuracy": ("qubo_round.studies.cost_vs_accuracy",
                         "Does the QUBO energy of a rounding predict its task loss and accuracy? (paper Fig. 1)"),
    "solver-league": ("qubo_round.studies.solver_league",
                      "How close does each solver get to the optimum or a certified bound, how fast, and what accuracy does that buy?"),
    "relaxation-design": ("qubo_round.studies.relaxation_design",
                          "What do the relaxation's design choices contribute? (paper Tables 3-6)"),
    "bits-granularity": ("qubo_round.studies.bits_granularity",
                         "How do bit width and per-tensor versus per-channel grids change the picture, on digits and MiniLM?"),
    "data": ("qubo_round.studies.data",
             "How much unlabelled calibration data is needed, and does its domain matter? (paper Fig. 4)"),
}


class UnknownStudyError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def available_studies() -> list[str]:
    return list(STUDIES)


def get_study(name: str) -> Callable:
    """The ``run(ctx)`` function of study ``name``."""
    if name not in STUDIES:
        raise UnknownStudyError(f"unknown study {name!r}; choose one of: {', '.join(STUDIES)} "
                                f"(`qubo-round study --list`)")
    return importlib.import_module(STUDIES[name][0]).run
