"""Benchmark harness: suites of instances x solvers x seeds -> one CSV row per trial -> reports.

* :mod:`.suites` (registry), :mod:`.digits` and :mod:`.public`: the instances.
* :mod:`.trial`: one trial and its row (gap formulas documented there).
* :mod:`.sweep`: :func:`run_sweep` (resumable; local pool or Dask).
* :mod:`.report`: Markdown tables and PNG plots from ``results.csv``.
"""
from .suites import (DESCRIPTOR_FIELDS, Instance, SuiteOptions, UnknownSuiteError, available_suites,
                     get_suite, register_suite, suite_instances)
from .sweep import SweepSummary, run_sweep
from .trial import COLUMNS, KEY_COLUMNS, Trial, relative_gap, run_trial

__all__ = ["DESCRIPTOR_FIELDS", "Instance", "SuiteOptions", "UnknownSuiteError", "available_suites",
           "get_suite", "register_suite", "suite_instances", "SweepSummary", "run_sweep", "COLUMNS",
           "KEY_COLUMNS", "Trial", "relative_gap", "run_trial"]
