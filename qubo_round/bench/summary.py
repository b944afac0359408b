"""Human- and machine-readable summaries of layer problems."""
from __future__ import annotations

import numpy as np

from ..problem import QUBOFamily


def problem_summary(problems: list[QUBOFamily], exact_limit: int = 24) -> dict:
    """Rows, cols, free/fixed variables, condition number, loss of nearest rounding, and the exact
    optimum (with its improvement over nearest) when every row has <= ``exact_limit`` free
    variables. Works on the problems of one layer (one per group)."""
    from qubo_round.solvers import get_solver

    nearest = get_solver("nearest")
    rows = sum(p.space.shape[0] for p in problems)
    free = int(sum((~p.fixed_mask).sum() for p in problems))
    fixed = int(sum(p.fixed_mask.sum() for p in problems))
    near = float(sum(nearest.solve(p).energy for p in problems))
    out = {"layer": problems[0].meta.get("layer"), "form": problems[0].meta.get("form"),
           "groups": len(problems), "rows": rows, "cols": problems[0].space.shape[1],
           "bits": problems[0].meta.get("bits"), "free": free, "fixed": fixed,
           "max_free_per_row": int(max(p.num_free.max() for p in problems)),
           "condition": float(max(p.meta.get("condition", np.nan) for p in problems)),
           "damping": float(max(p.meta.get("damping", 0.0) for p in problems)),
           "nearest_loss": near, "exact_loss": None, "exact_improvement": None}
    if out["max_free_per_row"] <= exact_limit:
        exact = float(sum(get_solver("exact", max_free=exact_limit).solve(p).energy for p in problems))
        out["exact_loss"] = exact
        out["exact_improvement"] = (near - exact) / near if near > 0 else 0.0
    return out


def format_summary(s: dict) -> str:
    """Markdown table of :func:`problem_summary`."""
    def fmt(v):
        if v is None:
            return "not feasible (more than the exact limit of free variables per row)"
        if isinstance(v, float):
            return f"{v:.6g}"
        return str(v)
    lines = ["| quantity | value |", "|---|---|"]
    labels = {"exact_improvement": "exact improvement over nearest (fraction)",
              "condition": "condition number of H (worst group)",
              "nearest_loss": "loss of nearest rounding", "exact_loss": "exact optimum loss"}
    for k, v in s.items():
        lines.append(f"| {labels.get(k, k)} | {fmt(v)} |")
    return "\n".join(lines)
