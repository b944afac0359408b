"""Study ``cost-vs-accuracy``: does the QUBO energy of a rounding predict its task loss and
accuracy? (paper Fig. 1)

One layer of the digits CNN is quantized (2-bit per-channel, the setting of the
``rounding-choice`` study; the rest stays in float) with many stochastic roundings
``P(V = 1) = frac(W / s)``. For each rounding we measure three QUBO energies on the calibration
data:

* eq. 20, the local MSE ``E[||dW x||^2]`` (activation covariance),
* eq. 17-18, the per-row task-loss Hessian ``sum_k dw_k^T H_k dw_k``,
* eq. 13, the second-order term ``1/2 dw^T H dw`` with the full Gauss-Newton Hessian of the
  mean cross-entropy (eq. 16), i.e. the predicted change of the calibration loss,

and the task itself: the change of the cross-entropy on the labelled calibration images (the
quantity eq. 13 approximates) and on the test split, and the test accuracy. Pearson and Spearman
correlations over the stochastic roundings (95% bootstrap intervals) say how well each energy
predicts the task. Nearest rounding and the optimised roundings (exact optima of eq. 20 and
eq. 17-18, the best eq. 16 solution of a heuristic portfolio, AdaRound) are marked points, not
part of the correlations.
"""
from __future__ import annotations

import logging
import time

import numpy as np

from .common import Lab, StudyContext, fmt, one_thread
from .rounding_choice import (BITS, GRANULARITY, calibration, calibration_labels, energy, fixed_rounding,
                              problems, quantized_model, solve, solve_portfolio, stochastic_rounding)

log = logging.getLogger(__name__)

ENERGIES = {"E20": ("covariance", "eq. 20 local MSE"), "E17": ("row-hessian", "eq. 17-18 row Hessian"),
            "E13": ("full-hessian", "eq. 13 second-order term (1/2 dw^T H dw)")}
TARGETS = {"dce_calib": "Δ cross-entropy, calibration", "dce_test": "Δ cross-entropy, test",
           "accuracy": "test accuracy"}
VERSION = 1


def task(lab: Lab, model, n: int, seed: int) -> dict:
    """Mean cross-entropy on the labelled calibration images and on the test split, and the test
    accuracy of ``model``."""
    import torch
    import torch.nn.functional as F

    xc, yc = calibration(lab, n, seed), calibration_labels(n, seed)
    xt, yt = lab.bundle().evaluation()
    with torch.no_grad():
        lc, lt = model(xc), model(xt)
    return {"ce_calib": float(F.cross_entropy(lc, yc)), "ce_test": float(F.cross_entropy(lt, yt)),
            "accuracy": float((lt.argmax(-1) == yt).float().mean())}


def _point(lab: Lab, layer: str, n: int, seed: int, Vs: list[np.ndarray], ref: dict) -> dict:
    t = task(lab, quantized_model(lab, {layer: Vs}), n, seed)
    e = {k: energy(lab, layer, f, n, seed, Vs) for k, (f, _) in ENERGIES.items()}
    e["E13"] *= 0.5  # the problem's energy is dw^T H dw; eq. 13's term is half of it
    return {**e, "dce_calib": t["ce_calib"] - ref["ce_calib"], "dce_test": t["ce_test"] - ref["ce_test"],
            "accuracy": t["accuracy"]}


def _marked(lab: Lab, layer: str, n: int, seed: int, iterations: int, portfolio) -> dict[str, list[np.ndarray]]:
    """Nearest and the optimised roundings of ``layer``."""
    out = {"nearest": fixed_rounding(lab, layer, "nearest")}
    for key, form in (("eq. 20 optimum", "covariance"), ("eq. 17-18 optimum", "row-hessian")):
        worst = max(int(p.num_free.max()) for p in problems(lab, layer, form, n, seed))
        spec = "exact" if worst <= 24 else "anneal/thorough"
        out[key if spec == "exact" else key.replace("optimum", "best (anneal/thorough)")] = solve(lab, layer, form, n, seed, spec)
    free = int(problems(lab, layer, "full-hessian", n, seed)[0].num_free.max())
    pf = [s for s in portfolio if s[0] != "sdp" or free <= 300]
    out["eq. 16 best found"], _ = solve_portfolio(lab, layer, "full-hessian", n, seed, pf)
    out["AdaRound"] = solve(lab, layer, "covariance", n, seed, "adaround", {"iterations": iterations})
    return out


def _cell(lab: Lab, layer: str, n: int, seed: int, k: int, iterations: int, portfolio) -> dict:
    t0 = time.perf_counter()
    ref = task(lab, lab.bundle().model, n, seed)
    rng = np.random.default_rng([seed, 3])
    with one_thread():
        samples = [_point(lab, layer, n, seed, stochastic_rounding(lab, layer, rng), ref) for _ in range(k)]
        marked = {name: _point(lab, layer, n, seed, Vs, ref)
                  for name, Vs in _marked(lab, layer, n, seed, iterations, portfolio).items()}
    return {"float": ref, "samples": samples, "marked": marked, "seconds": time.perf_counter() - t0}


def correlations(samples: list[dict], seed: int, boot: int) -> list[dict]:
    """Pearson and Spearman correlation of every energy with every target, with percentile
    bootstrap 95% intervals (``boot`` resamples of the roundings)."""
    from scipy.stats import pearsonr, spearmanr

    rng = np.random.default_rng(seed)
    n = len(samples)
    idx = rng.integers(0, n, size=(boot, n))
    rows = []
    for ek, (_, elabel) in ENERGIES.items():
        x = np.array([s[ek] for s in samples])
        for tk, tlabel in TARGETS.items():
            y = np.array([s[tk] for s in samples])
            row = {"energy": elabel, "target": tlabel}
            for name, fn in (("pearson", lambda a, b: pearsonr(a, b)[0]), ("spearman", lambda a, b: spearmanr(a, b)[0])):
                r = float(fn(x, y))
                bs = [fn(x[i], y[i]) for i in idx]
                bs = np.array([v for v in bs if np.isfinite(v)])
                lo, hi = (np.percentile(bs, [2.5, 97.5]) if bs.size else (np.nan, np.nan))
                row[name] = r
                row[f"{name} 95% CI"] = f"[{lo:.2f}, {hi:.2f}]"
            rows.append(row)
    return rows


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y)[0])


def _figure(ctx: StudyContext, layer: str, res: dict) -> None:
    samples, marked = res["samples"], res["marked"]
    markers = dict(zip(marked, ["X", "*", "P", "D", "s", "^"]))
    with ctx.figure(f"scatter_{layer}", f"{layer}: {len(samples)} stochastic roundings (dots) and marked "
                    "roundings; x: QUBO energy on the calibration data, y: task", nrows=3, ncols=3,
                    figsize=(13, 11)) as (fig, axes):
        for j, (ek, (_, elabel)) in enumerate(ENERGIES.items()):
            for i, (tk, tlabel) in enumerate(TARGETS.items()):
                ax = axes[i, j]
                ax.scatter([s[ek] for s in samples], [100 * s[tk] if tk == "accuracy" else s[tk] for s in samples],
                           s=12, alpha=0.6, color="tab:blue", label="stochastic")
                for name, p in marked.items():
                    ax.scatter([p[ek]], [100 * p[tk] if tk == "accuracy" else p[tk]], marker=markers[name], s=80,
                               label=name, edgecolor="k")
                if ek == "E13" and tk == "dce_calib":
                    lim = max(s[ek] for s in samples)
                    ax.plot([0, lim], [0, lim], "k--", lw=0.8, label="y = x (exact prediction)")
                    ax.legend(fontsize=7, loc="upper left")
                x = np.array([s[ek] for s in samples])
                y = np.array([s[tk] for s in samples])
                ax.set_title(f"Pearson {np.corrcoef(x, y)[0, 1]:.2f}, Spearman {_spearman(x, y):.2f}", fontsize=8)
                ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
                ax.set_xlabel(elabel, fontsize=8)
                ax.set_ylabel(tlabel + (" %" if tk == "accuracy" else ""), fontsize=8)
                ax.tick_params(labelsize=7)
        axes[0, 0].legend(fontsize=7)


def run(ctx: StudyContext) -> None:
    lab = ctx.lab
    n = ctx.pick(1024, 256)
    k = ctx.pick(100, 20)
    iterations = ctx.pick(10000, 300)
    boot = ctx.pick(1000, 200)
    layers = ctx.pick(("conv1", "fc2"), ("conv1",))
    portfolio = ctx.pick((("cem", {"population": 1000, "iterations": 400, "patience": 100}), ("sdp", {}),
                          ("anneal", {"num_reads": 32, "num_sweeps": 3000})),
                         (("cem", {"population": 100, "iterations": 60}),))
    seed = ctx.seed
    ctx.text(f"Digits CNN, **{BITS}-bit {GRANULARITY}** weights (MSE grid) on one layer at a time, the rest "
             f"in float; {k} stochastic roundings (seed {seed}); energies and the calibration cross-entropy "
             f"on the same {n} labelled calibration images (training split, seed {seed}); test: 540 "
             f"held-out images. AdaRound {iterations} iterations. Δ cross-entropy: quantized minus float "
             "network. Correlations over the stochastic roundings only; intervals: percentile bootstrap "
             f"({boot} resamples).")
    all_rows, all_corr = [], []
    for layer in ctx.bar(layers, "layers"):
        key = {"study": "cost-vs-accuracy", "layer": layer, "n": n, "seed": seed, "k": k, "iterations": iterations,
               "portfolio": portfolio, "bits": BITS, "granularity": GRANULARITY, "version": VERSION}
        res = ctx.cell(key, lambda layer=layer: _cell(lab, layer, n, seed, k, iterations, portfolio))
        corr = correlations(res["samples"], seed, boot)
        ctx.text(f"## Layer {layer}\n\nFloat network: calibration cross-entropy {res['float']['ce_calib']:.4f}, "
                 f"test cross-entropy {res['float']['ce_test']:.4f}, test accuracy "
                 f"{100 * res['float']['accuracy']:.2f}%.")
        ctx.table([{"layer": layer, **r} for r in corr], title=f"{layer}: correlation over {k} stochastic roundings")
        pts = []
        s = res["samples"]
        for label, pick in (("stochastic, mean", None), ("stochastic, best by accuracy", "acc"),
                            ("stochastic, lowest eq. 13 term", "E13"), ("stochastic, lowest eq. 20", "E20")):
            if pick is None:
                p = {c: float(np.mean([x[c] for x in s])) for c in s[0]}
            elif pick == "acc":
                p = max(s, key=lambda x: x["accuracy"])
            else:
                p = min(s, key=lambda x: x[pick])
            pts.append({"rounding": label, **p})
        pts += [{"rounding": name, **p} for name, p in res["marked"].items()]
        ctx.table([{"rounding": p["rounding"], "E eq. 20": p["E20"], "E eq. 17-18": p["E17"],
                    "eq. 13 term": p["E13"], "Δ CE calib": p["dce_calib"], "Δ CE test": p["dce_test"],
                    "test accuracy %": f"{100 * p['accuracy']:.2f}"} for p in pts],
                  title=f"{layer}: marked roundings and the stochastic cloud")
        ratio = np.array([x["dce_calib"] / x["E13"] for x in s if x["E13"] > 0])
        ctx.text(f"Second-order prediction on {layer}: actual / predicted calibration loss change "
                 f"(Δ CE calib / eq. 13 term) over the stochastic roundings: median {fmt(float(np.median(ratio)), 3)}, "
                 f"interquartile range [{fmt(float(np.percentile(ratio, 25)), 3)}, "
                 f"{fmt(float(np.percentile(ratio, 75)), 3)}].")
        _figure(ctx, layer, res)
        all_corr += [{"layer": layer, **r} for r in corr]
        all_rows += [{"layer": layer, "kind": "stochastic", "index": i, **x} for i, x in enumerate(s)]
        all_rows += [{"layer": layer, "kind": name, "index": "", **p} for name, p in res["marked"].items()]
    ctx.csv("roundings", all_rows)
    ctx.csv("correlations", all_corr)
