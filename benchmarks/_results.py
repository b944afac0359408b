"""Shared by the benchmark scripts: write a result as ``OUT.md`` (Markdown) and ``OUT.json``."""
from __future__ import annotations

import json
from pathlib import Path


def write_results(out: Path, md: str, args, results) -> None:
    """Print ``md`` and write it to ``out.md``; ``out.json`` holds the arguments and ``results``."""
    print(md)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(md + "\n")
    out.with_suffix(".json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                    "results": results}, indent=1))
