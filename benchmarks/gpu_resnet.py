"""Time the full-network relaxation (AdaRound, covariance form) on torchvision's ResNet18 and
ResNet50 on a CUDA device: seconds per layer and in total.

    python benchmarks/gpu_resnet.py [--models resnet18 resnet50] [--iterations 10000] [--calib 1024]

Random weights and random calibration images: this measures time, not accuracy (the paper's
figure is about 10 minutes for ResNet18 on a GTX 1080 Ti with 10k iterations per layer on data
batches). Without CUDA or torchvision it prints why and exits 0 (never a failure).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet18", "resnet50"])
    ap.add_argument("--iterations", type=int, default=10000)
    ap.add_argument("--fallback-iterations", type=int, default=2000,
                    help="iterations for later models once --budget-s is half spent")
    ap.add_argument("--budget-s", type=float, default=240.0)
    ap.add_argument("--calib", type=int, default=1024)
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "benchmarks/results"), "gpu_resnet.json"))
    args = ap.parse_args()
    import torch
    if not torch.cuda.is_available():
        print("skipped: no CUDA device (this benchmark times the GPU path)")
        return 0
    try:
        import torchvision
    except Exception as e:  # noqa: BLE001 - any import failure means: not here
        print(f"skipped: torchvision is not importable here ({type(e).__name__}: {e})")
        return 0
    import logging
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    from qubo_round.pipeline import QuantConfig, quantize_model

    t_start = time.perf_counter()
    results = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
               "torchvision": torchvision.__version__, "python": platform.python_version(),
               "bits": args.bits, "calibration_images": args.calib, "seed": args.seed, "models": {}}
    for name in args.models:
        its = args.iterations
        if time.perf_counter() - t_start > args.budget_s / 2:
            its = args.fallback_iterations
        torch.manual_seed(args.seed)
        model = getattr(torchvision.models, name)(weights=None).eval()
        calib = torch.randn(args.calib, 3, 224, 224, generator=torch.Generator().manual_seed(args.seed)).cuda()
        cfg = QuantConfig(bits=args.bits, solver="adaround", solver_params={"iterations": its, "device": "cuda"},
                          form="covariance", seed=args.seed, polish=False)  # times the relaxation alone
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        _, report = quantize_model(model, calib, cfg, device="cuda", progress=False)
        torch.cuda.synchronize()
        total = time.perf_counter() - t0
        layers = [{"layer": r.name, "rows": r.rows, "cols": r.cols, "seconds": round(r.seconds, 3),
                   "loss_vs_nearest": r.loss / r.nearest_loss if r.nearest_loss else None} for r in report.layers]
        results["models"][name] = {"iterations": its, "layers": len(layers), "seconds_total": round(total, 2),
                                   "per_layer": layers}
        print(f"{name}: {len(layers)} layers, {its} iterations/layer, {total:.1f} s total", flush=True)
        for r in layers:
            print(f"  {r['layer']:<28} {r['rows']:>5}x{r['cols']:<5} {r['seconds']:8.2f} s  "
                  f"loss/nearest {r['loss_vs_nearest']:.3f}", flush=True)
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
        del model, calib
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
