"""The ``bench`` and ``report`` subcommands (wired into :mod:`qubo_round.cli`)."""
from __future__ import annotations

import os
from pathlib import Path


def cmd_bench(args) -> int:
    from .suites import SuiteOptions
    from .sweep import run_sweep

    out = Path(args.out)
    options = SuiteOptions(data_dir=Path(args.data_dir) if args.data_dir else None,
                           cache_dir=Path(args.cache_dir) if args.cache_dir else out / "problems",
                           max_rows=args.max_rows, bits=tuple(args.bits), limit=args.limit)
    summary = run_sweep(args.suite, args.solver, args.seeds, out, options=options, workers=args.workers,
                        scheduler=args.scheduler, time_limit=args.time_limit, bound_method=args.bound_method,
                        retry_errors=args.retry_errors, progress=not args.no_progress)
    print(summary)
    return 0


def cmd_report(args) -> int:
    from .report import write_report

    path = write_report(args.run_dir, args.out)
    print(path.read_text())
    print(f"\n(written to {path})")
    return 0


def add_parsers(sub) -> None:
    """Add ``bench`` and ``report`` to the subparsers ``sub`` of the main CLI."""
    b = sub.add_parser("bench", help="benchmark solvers on suites of instances (resumable sweep)")
    b.add_argument("--suite", action="append", required=True,
                   help="suite name, repeatable (digits-layers, digits-small, public-bqp50, ...)")
    b.add_argument("--solver", action="append", required=True, help="solver spec NAME or NAME/PRESET, repeatable")
    b.add_argument("--seeds", type=int, nargs="+", default=[0], help="solver seeds (default 0)")
    b.add_argument("--out", required=True, help="run directory (rerun the command to resume)")
    b.add_argument("--workers", type=int, default=os.cpu_count(),
                   help="local processes (default: CPU count; 1 runs in this process)")
    b.add_argument("--scheduler", default=None,
                   help="Dask scheduler address tcp://HOST:PORT, or 'local' for a LocalCluster")
    b.add_argument("--time-limit", type=float, default=None, help="seconds per solve")
    b.add_argument("--max-rows", type=int, default=16, help="subsample layers to this many rows (default 16)")
    b.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4], help="digits bit widths (default 2 3 4)")
    b.add_argument("--limit", type=int, default=None, help="first N instances of each suite")
    b.add_argument("--data-dir", default=None, help="public instances directory (default ../shared/data/qubo)")
    b.add_argument("--cache-dir", default=None, help="generated problems (default OUT/problems)")
    b.add_argument("--bound-method", default="auto", help="lower bound method (auto, exact, sdp, eig, none)")
    b.add_argument("--retry-errors", action="store_true", help="rerun trials that failed")
    b.add_argument("--no-progress", action="store_true", help="no progress bars")
    b.set_defaults(func=cmd_bench)

    r = sub.add_parser("report", help="Markdown tables and PNG plots of a bench run")
    r.add_argument("run_dir", help="bench run directory (or its results.csv)")
    r.add_argument("--out", default=None, help="output directory (default RUN_DIR/report)")
    r.set_defaults(func=cmd_report)
