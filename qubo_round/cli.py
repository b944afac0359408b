"""Command line: ``qubo-round quantize|problem|solve|solvers|models|bench|report``."""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

from .extras import MissingExtraError

log = logging.getLogger("qubo_round")


def _grid_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bits", type=int, default=4, help="weight bits, 2..8 (default 4)")
    p.add_argument("--granularity", choices=["channel", "tensor"], default="channel")
    p.add_argument("--scheme", choices=["symmetric", "asymmetric"], default="symmetric")
    p.add_argument("--narrow", action="store_true", help="symmetric narrow range [-(2^(b-1)-1), 2^(b-1)-1]")
    p.add_argument("--scale-method", choices=["minmax", "mse", "output-mse"], default="mse")
    p.add_argument("--group-size", type=int, default=None, metavar="G",
                   help="one scale per row and group of G input columns (default: one per row)")


def _json_safe(o):
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    if isinstance(o, dict):
        return {k: _json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_json_safe(v) for v in o]
    return o


def cmd_problem(args) -> int:
    from .extract import layer_problems
    from .grid import Grid
    from .io import save_problem
    from .layers import supported_layers
    from .bench.summary import format_summary, problem_summary
    from .zoo import load_model

    bundle = load_model(args.model)
    if args.layer is None:
        raise SystemExit(f"--layer is required; layers of {args.model}: {', '.join(supported_layers(bundle.model))}")
    grid = Grid(bits=args.bits, granularity=args.granularity, scheme=args.scheme, narrow=args.narrow,
                scale_method=args.scale_method, group_size=args.group_size)
    data = bundle.calibration(args.samples, args.seed)
    problems = layer_problems(bundle.model, args.layer, data, grid, form=args.form)
    summary = problem_summary(problems)
    summary.update(model=args.model, samples=args.samples, seed=args.seed)
    if args.dump:
        paths = []
        for g, p in enumerate(problems):
            path = Path(args.dump)
            if len(problems) > 1:
                path = path.with_name(f"{path.stem}-g{g}{path.suffix or '.npz'}")
            paths.append(str(save_problem(p, path)))
        summary["dumped"] = paths
    if args.json:
        print(json.dumps(_json_safe(summary)))
    else:
        print(format_summary(summary))
    return 0


def cmd_solve(args) -> int:
    from .instances import load_instance
    from .pipeline.cli import parse_params  # the CLIs' one KEY=VALUE parser
    from .solvers import get_solver

    problem = load_instance(args.instance, data_dir=args.data_dir)
    solver = get_solver(args.solver, **parse_params(args.param))
    res = solver.solve(problem, seed=args.seed, time_limit=args.time_limit)
    out = {"instance": problem.meta.get("name", args.instance), "solver": args.solver,
           "objective": problem.objective(res.energy), "sense": problem.meta.get("sense", "min"),
           "energy": res.energy, "seconds": res.seconds, "status": res.status, "seed": args.seed,
           "n": problem.n, "rows": problem.rows}
    if res.lower_bound is not None and not any(math.isnan(b) for b in res.lower_bound):
        out["lower_bound"] = float(sum(res.lower_bound))
    if args.json:
        print(json.dumps(_json_safe(out)))
    else:
        print(f"instance {out['instance']}  solver {args.solver}  status {res.status}")
        print(f"objective ({out['sense']}imise) {out['objective']:.10g}   energy {res.energy:.10g}   "
              f"time {res.seconds:.3f} s")
    return 0


def cmd_solvers(args) -> int:
    from .solvers import available_solvers, describe
    rows = [describe(n) for n in available_solvers()]
    if args.json:
        print(json.dumps(rows))
        return 0
    print("| solver | exact | max free vars/row | GPU | group-wise rows | available | presets | description |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        groups = "native" if r["column_scales"] else "one matrix per row"
        print(f"| {r['name']} | {r['exact']} | {r['max_variables'] or '-'} | {r['needs_gpu']} | {groups} | "
              f"{r['available']} | {', '.join(r['presets']) or '-'} | {r['doc']} |")
    return 0


def cmd_models(args) -> int:
    from .zoo import available_models
    for name in available_models():
        print(name)
    return 0


def cmd_study(args) -> int:
    from .studies import STUDIES
    from .studies.common import run_study

    if args.list or not args.name:
        if not args.list:
            print("qubo-round: error: name a study (or --list); choose one of: " + ", ".join(STUDIES), file=sys.stderr)
            return 2
        for name, (_, question) in STUDIES.items():
            print(f"{name:20s} {question}")
        return 0
    path = run_study(args.name, quick=args.quick, seed=args.seed, out=args.out,
                     cache=None if args.no_cache else "default", fresh=args.fresh, progress=not args.no_progress)
    print(f"wrote {path} (and the CSV/PNG files beside it)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="qubo-round", description=__doc__)
    ap.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("problem", help="summarise one layer's rounding problem")
    p.add_argument("--model", default="digits", help="model zoo name (default: digits)")
    p.add_argument("--layer", help="layer name, e.g. conv1")
    _grid_args(p)
    p.add_argument("--form", default="covariance",
                   choices=["covariance", "row-hessian", "full-hessian", "autograd-hessian"])
    p.add_argument("--samples", type=int, default=256, help="calibration samples (default 256)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dump", help="write the problem(s) to this .npz path")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_problem)

    s = sub.add_parser("solve", help="solve a public instance (bqp/gka/Gset) or a dumped problem")
    s.add_argument("instance", help="file path, e.g. orlib/bqp50.txt#3, gset/G1.txt, layer.npz")
    s.add_argument("--solver", required=True, help="registered solver name, optionally NAME/PRESET")
    s.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="solver parameter")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--time-limit", type=float, default=None, help="seconds")
    s.add_argument("--data-dir", default=None, help="where to look for instance files given by name")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=cmd_solve)

    ls = sub.add_parser("solvers", help="list registered solvers and their capabilities")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_solvers)
    lm = sub.add_parser("models", help="list the model zoo")
    lm.set_defaults(func=cmd_models)
    st = sub.add_parser("study", help="run one of the research studies (see studies/README.md)")
    st.add_argument("name", nargs="?", help="study name (--list shows them)")
    st.add_argument("--list", action="store_true", help="list the studies and their questions")
    st.add_argument("--quick", action="store_true", help="CI-sized variant (minutes -> seconds); results go to runs/studies-quick/")
    st.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    st.add_argument("--out", default=None, help="results folder (default studies/results/NAME)")
    st.add_argument("--fresh", action="store_true", help="ignore cached cells and recompute everything")
    st.add_argument("--no-cache", action="store_true", help="do not read or write the cell cache")
    st.add_argument("--no-progress", action="store_true", help="no progress bars")
    st.set_defaults(func=cmd_study)
    from .bench.cli import add_parsers as add_bench_parsers  # bench, report
    add_bench_parsers(sub)
    from .pipeline.cli import add_parser as add_quantize_parser  # quantize
    add_quantize_parser(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return args.func(args)
    except (ValueError, KeyError, TypeError, OSError, MissingExtraError) as e:  # OSError: FileNotFound, FileExists, Permission...
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"qubo-round: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
