"""Study ``data``: how much unlabelled calibration data is needed, and does its domain matter?
(paper Fig. 4 and section 5)

The whole digits CNN goes through the pipeline with AdaRound (and GPTQ as a reference; nearest
rounding on the MSE grid uses no data at all, so it is one horizontal line), calibrated on

* ``n`` in-domain images of the training split, ``n`` = 16 ... 1024, 3 seeds each (the seed
  draws the images), and
* ``n`` = 1024 images of another domain, evaluated on the real digits test split as always:
  shifted digits (every image moved by up to 2 pixels in each direction, more than the
  training augmentation's 1), noised digits (Gaussian noise, sigma 0.25), inverted digits
  (``1 - x``), transposed digits, uniform random images, and photo patches (random crops of
  scikit-learn's two bundled sample photos, grey, averaged down to 8 x 8: natural images).

Every input is an 8 x 8 grey image in [0, 1], like the digits (pixel / 16).
"""
from __future__ import annotations

import logging
import math
import time

import torch

from .common import Lab, StudyContext, mean_std, one_thread, pm
from .relaxation_design import BITS, GRANULARITY, ITERATIONS, task_metrics

log = logging.getLogger(__name__)

SIZES = (16, 32, 64, 128, 256, 512, 1024)
SEEDS = 3
DOMAIN_N = 1024
#: solver spec and parameters of each method (``iterations`` filled in by the run).
METHODS = {"adaround": "adaround/fast", "gptq": "gptq"}


# --- calibration domains ------------------------------------------------------------------

def _digits(lab: Lab, n: int, seed: int) -> torch.Tensor:
    return lab.bundle().calibration(n, seed)


def _shifted(lab: Lab, n: int, seed: int, max_shift: int = 2) -> torch.Tensor:
    """Digits moved by (dy, dx) in [-max_shift, max_shift]^2, not both 0; vacated pixels are 0."""
    x = _digits(lab, n, seed)
    g = torch.Generator().manual_seed(seed + 10_000)
    out = torch.zeros_like(x)
    for i in range(n):
        while True:
            dy, dx = (int(v) for v in torch.randint(-max_shift, max_shift + 1, (2,), generator=g))
            if dy or dx:
                break
        src = x[i, :, max(0, -dy):8 - max(0, dy), max(0, -dx):8 - max(0, dx)]
        out[i, :, max(0, dy):max(0, dy) + src.shape[1], max(0, dx):max(0, dx) + src.shape[2]] = src
    return out


def _noised(lab: Lab, n: int, seed: int, sigma: float = 0.25) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 20_000)
    x = _digits(lab, n, seed)
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp_(0.0, 1.0)


def _inverted(lab: Lab, n: int, seed: int) -> torch.Tensor:
    return 1.0 - _digits(lab, n, seed)


def _transposed(lab: Lab, n: int, seed: int) -> torch.Tensor:
    return _digits(lab, n, seed).transpose(-1, -2).contiguous()


def _uniform(lab: Lab, n: int, seed: int) -> torch.Tensor:
    return torch.rand((n, 1, 8, 8), generator=torch.Generator().manual_seed(seed + 30_000))


def _photos(lab: Lab, n: int, seed: int) -> torch.Tensor:
    """Random square crops (16 to 128 pixels) of scikit-learn's two sample photos (china, flower),
    grey, averaged down to 8 x 8, in [0, 1]."""
    import numpy as np
    import torch.nn.functional as F
    from sklearn.datasets import load_sample_images

    imgs = [torch.from_numpy(np.asarray(im, np.float32).mean(-1) / 255.0) for im in load_sample_images().images]
    g = torch.Generator().manual_seed(seed + 40_000)
    out = torch.empty(n, 1, 8, 8)
    for i in range(n):
        im = imgs[int(torch.randint(len(imgs), (1,), generator=g))]
        size = 8 * int(torch.randint(2, 17, (1,), generator=g))
        y = int(torch.randint(im.shape[0] - size + 1, (1,), generator=g))
        x = int(torch.randint(im.shape[1] - size + 1, (1,), generator=g))
        out[i, 0] = F.adaptive_avg_pool2d(im[None, None, y:y + size, x:x + size], 8)[0, 0]
    return out


#: name -> (description, generator ``(lab, n, seed) -> (n, 1, 8, 8)`` float32 in [0, 1]; ``lab``
#: gives the digits bundle).
DOMAINS = {
    "digits": ("digits, training split (in-domain)", _digits),
    "shifted": ("digits shifted by up to 2 px", _shifted),
    "noised": ("digits + Gaussian noise (sigma 0.25)", _noised),
    "inverted": ("inverted digits (1 - x)", _inverted),
    "transposed": ("transposed digits", _transposed),
    "uniform": ("uniform random images", _uniform),
    "photos": ("photo patches (sklearn sample images)", _photos),
}


def calibration_set(lab: Lab, domain: str, n: int, seed: int) -> torch.Tensor:
    """``n`` calibration inputs of ``domain`` (a key of :data:`DOMAINS`), drawn with ``seed``."""
    return DOMAINS[domain][1](lab, n, seed)


# --- cells --------------------------------------------------------------------------------

def _run_one(lab: Lab, method: str, domain: str, n: int, seed: int, iterations: int) -> dict:
    from qubo_round.pipeline import QuantConfig

    params = {"iterations": iterations} if method == "adaround" else {}
    cfg = QuantConfig(bits=BITS, granularity=GRANULARITY, solver=METHODS[method], solver_params=params, seed=seed,
                      polish=False)  # the solvers' own roundings (this study predates the polish)
    t0 = time.perf_counter()
    qmodel, report = lab.quantize(calibration_set(lab, domain, n, seed), cfg)
    return {**task_metrics(lab, qmodel), "loss": report.loss, "seconds": time.perf_counter() - t0}


def _cell(ctx: StudyContext, method: str, domain: str, n: int, seed: int, iterations: int) -> dict:
    lab = ctx.lab
    key = {"study": "data", "v": 1, "method": method, "domain": domain, "n": n, "seed": seed, "bits": BITS,
           "granularity": GRANULARITY, "iterations": iterations if method == "adaround" else None}
    return ctx.cell(key, lambda: _run_one(lab, method, domain, n, seed, iterations))


def run(ctx: StudyContext) -> None:
    with one_thread():
        _run(ctx)


def _run(ctx: StudyContext) -> None:
    lab = ctx.lab
    iterations = ctx.pick(ITERATIONS, 40)
    sizes = ctx.pick(SIZES, (16, 64))
    seeds = [ctx.seed + i for i in range(ctx.pick(SEEDS, 1))]
    domain_n = ctx.pick(DOMAIN_N, 64)
    domain_methods = ctx.pick(tuple(METHODS), ("adaround",))
    jobs = [(m, "digits", n, s) for n in sizes for m in METHODS for s in seeds]
    jobs += [(m, d, domain_n, s) for d in DOMAINS if d != "digits" for m in domain_methods for s in seeds]
    if domain_n not in sizes:
        jobs += [(m, "digits", domain_n, s) for m in domain_methods for s in seeds]
    res = {}
    for m, d, n, s in ctx.bar(jobs, "calibration sets"):
        res[m, d, n, s] = _cell(ctx, m, d, n, s, iterations)
    # nearest on the MSE grid uses no calibration data (the data only enter the report's losses)
    near = ctx.cell({"study": "data", "v": 1, "method": "nearest", "bits": BITS, "granularity": GRANULARITY},
                    lambda: _nearest(lab))
    flt = task_metrics(lab, lab.bundle().model)

    ctx.csv("runs", [{"method": m, "domain": d, "n": n, "seed": s, "bits": BITS, "granularity": GRANULARITY,
                      "iterations": iterations if m == "adaround" else "", **{k: v for k, v in r.items()}}
                     for (m, d, n, s), r in res.items()])
    ctx.text(f"Digits CNN, every layer quantized to **{BITS}-bit per-{GRANULARITY} symmetric** weights (MSE grid) "
             f"through the pipeline, the same setting as study `relaxation-design` (where nearest rounding "
             f"collapses). AdaRound: `adaround/fast`, {iterations} steps per layer (covariance form: "
             f"deterministic given the data, so the spread over seeds is the calibration draw's); GPTQ; "
             f"nearest ({100 * near['accuracy']:.2f}%) uses no data; float {100 * flt['accuracy']:.2f}%. "
             f"Test accuracy on the 540 real test digits, mean ± std over seeds {seeds} "
             f"(one image = 0.185 points).")
    rows = []
    for n in sizes:
        row = {"calibration samples": n}
        for m in METHODS:
            rs = [res[m, "digits", n, s] for s in seeds]
            row[f"{m} accuracy %"] = pm([r["accuracy"] for r in rs], 100)
            row[f"{m} test CE"] = pm([r["test_ce"] for r in rs], 1, 4)
        rows.append(row)
    ctx.table(rows, title="Accuracy versus the number of in-domain calibration samples")
    ctx.csv("samples", rows)
    _plot(ctx, sizes, seeds, res, near, flt)

    drows = []
    for d, (desc, _) in DOMAINS.items():
        row = {"calibration domain": desc, "n": domain_n}
        for m in domain_methods:
            rs = [res[m, d, domain_n, s] for s in seeds]
            row[f"{m} accuracy %"] = pm([r["accuracy"] for r in rs], 100)
            ref = mean_std([r["accuracy"] for r in (res[m, "digits", domain_n, s] for s in seeds)])[0]
            row[f"{m} − in-domain"] = f"{100 * (mean_std([r['accuracy'] for r in rs])[0] - ref):+.2f}"
            row[f"{m} test CE"] = pm([r["test_ce"] for r in rs], 1, 4)
        drows.append(row)
    ctx.table(drows, title=f"Calibration domain ({domain_n} images; evaluated on the real digits test split)")
    ctx.csv("domains", drows)


def _nearest(lab: Lab) -> dict:
    from qubo_round.pipeline import QuantConfig
    from qubo_round.pipeline.nearest import nearest_model

    cfg = QuantConfig(bits=BITS, granularity=GRANULARITY)
    return task_metrics(lab, nearest_model(lab.bundle().model, _digits(lab, 1, 0), cfg))


def _plot(ctx: StudyContext, sizes, seeds, res, near, flt) -> None:
    with ctx.figure("samples", f"Test accuracy versus in-domain calibration samples ({BITS}-bit per-{GRANULARITY}), "
                    f"mean ± std over {len(seeds)} seed(s)", figsize=(6.5, 4.2)) as (fig, ax):
        for m, colour in zip(METHODS, ("tab:blue", "tab:orange")):
            ms = [mean_std([100 * res[m, "digits", n, s]["accuracy"] for s in seeds]) for n in sizes]
            ax.errorbar(sizes, [a for a, _ in ms], yerr=[e for _, e in ms], marker="o", capsize=3, label=m,
                        color=colour)
        ax.axhline(100 * near["accuracy"], color="grey", ls="--", label="nearest (no data)")
        ax.axhline(100 * flt["accuracy"], color="black", ls=":", label="float")
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(sizes))
        ax.set_xticklabels([str(n) for n in sizes])
        ax.set_xlabel("calibration samples")
        ax.set_ylabel("test accuracy %")
        lo = min(100 * near["accuracy"], min(100 * r["accuracy"] for r in res.values()))
        ax.set_ylim(max(0.0, math.floor(lo) - 2), 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
