"""Suites of public QUBO / Max-Cut instances (``shared/data/qubo``, see its README).

The instances are maximisation problems stored as minimisation QUBOs; each instance carries its
best-known objective (``best_known``, in the instance's own sense, from ``best_known.csv``).
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from .suites import Instance, SuiteOptions, describe_problem, register_suite

log = logging.getLogger(__name__)


def data_dir(options: SuiteOptions) -> Path:
    """The public data directory: ``options.data_dir``, else ``$QUBO_ROUND_DATA``, else
    ``shared/data/qubo`` beside the repository (or beside the working directory), else the copy
    shipped in the package."""
    from qubo_round.instances import DATA_ENV, PACKAGE_DATA

    if options.data_dir is not None:
        candidates = [Path(options.data_dir)]
    else:
        repo = Path(__file__).resolve().parents[2]
        candidates = [Path(p) for p in [os.environ.get(DATA_ENV)] if p]
        candidates += [repo.parent / "shared" / "data" / "qubo", Path.cwd().parent / "shared" / "data" / "qubo",
                       PACKAGE_DATA]
    for c in candidates:
        if (c / "best_known.csv").is_file():
            return c.resolve()
    raise FileNotFoundError("public QUBO data not found (no best_known.csv) in: "
                            + ", ".join(map(str, candidates)) + "; pass --data-dir")


def _instance(suite: str, spec: str, problem, known: dict[str, float]) -> Instance:
    name = problem.meta["name"]
    desc = describe_problem(problem, source=problem.meta.get("set"), best_known=known.get(name))
    return Instance(suite=suite, name=name, spec=spec, descriptors=desc)


def _bqp(suite: str, n: int, options: SuiteOptions):
    from qubo_round.instances import best_known, read_bqp

    root = data_dir(options)
    path = root / "orlib" / f"bqp{n}.txt"
    known = best_known(root)
    for k, problem in enumerate(read_bqp(path), start=1):
        yield _instance(suite, f"{path}#{k}", problem, known)


def _register_bqp(n: int) -> None:
    name = f"public-bqp{n}"

    def gen(options: SuiteOptions):
        return _bqp(name, n, options)

    gen.__doc__ = f"OR-Library Beasley bqp{n} (10 instances, n = {n})."
    gen.__qualname__ = f"bqp{n}"
    register_suite(name)(gen)


for _n in (50, 100, 250):
    _register_bqp(_n)


@register_suite("public-gka")
def gka(options: SuiteOptions):
    """OR-Library gka set (45 qbsolv .qubo files), in gka order (gka1a, ..., gka5f)."""
    from qubo_round.instances import best_known, read_gka

    root = data_dir(options)
    known = best_known(root)
    files = (root / "orlib" / "gka_qbsolv").glob("bqpgka_*.qubo")
    for path in sorted(files, key=lambda p: int(re.sub(r"\D", "", p.stem) or 0)):
        yield _instance("public-gka", str(path), read_gka(path), known)


@register_suite("public-gset")
def gset(options: SuiteOptions):
    """Gset max-cut graphs G1-G5 (n = 800)."""
    from qubo_round.instances import best_known, read_gset

    root = data_dir(options)
    known = best_known(root)
    for path in sorted((root / "gset").glob("G*.txt"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0)):
        yield _instance("public-gset", str(path), read_gset(path), known)
