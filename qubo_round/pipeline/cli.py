"""``qubo-round quantize``: the main job, on a zoo model or a user's own model."""
from __future__ import annotations

import ast
import importlib.util
import json
import logging
import time
from pathlib import Path

import torch

from ..errors import first_line

log = logging.getLogger(__name__)



def parse_params(items: list[str]) -> dict:
    """``--param KEY=VALUE`` items as a dict; values are Python literals where they parse, else strings."""
    out = {}
    for item in items:
        key, sep, val = item.partition("=")
        if not sep:
            raise SystemExit(f"--param expects KEY=VALUE, got {item!r}")
        try:
            out[key] = ast.literal_eval(val)
        except (ValueError, SyntaxError):
            out[key] = val
    return out

def add_parser(sub) -> None:
    q = sub.add_parser("quantize", help="quantize a whole network (default: the model's measured best "
                                        "configuration; adaround for models without one)")
    q.add_argument("--model", default="digits", help="zoo name (digits, minilm) or FILE.py:FACTORY")
    q.add_argument("--weights", help="state dict (.pt) for a FILE.py:FACTORY model")
    q.add_argument("--calib", help="calibration inputs (.pt holding one tensor) for a FILE.py:FACTORY model")
    q.add_argument("--eval", help="evaluation data (.pt holding (inputs, integer labels))")
    q.add_argument("--bits", type=int, default=4)
    q.add_argument("--granularity", choices=["channel", "tensor"], default="channel")
    q.add_argument("--scheme", choices=["symmetric", "asymmetric"], default="symmetric")
    q.add_argument("--narrow", action="store_true")
    q.add_argument("--scale-method", choices=["minmax", "mse", "output-mse"], default="mse")
    q.add_argument("--group-size", type=int, default=None, metavar="G",
                   help="one scale per output channel and group of G input columns (e.g. 128; default: "
                        "one per channel)")
    q.add_argument("--solver", default=None,
                   help="registry name, optionally NAME/PRESET (default: the zoo model's, chain/reference-adaround "
                        "for minilm; else adaround)")
    q.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="solver parameter")
    q.add_argument("--form", choices=["auto", "covariance", "data"], default="auto")
    q.add_argument("--activation", choices=["none", "relu"], default="none",
                   help="activation-aware loss through a following ReLU (data form)")
    q.add_argument("--reconstruction", choices=["asymmetric", "layerwise"], default=None,
                   help="asymmetric: inputs from the partly quantized network, targets from the float one "
                        "(eq. 25); layerwise: both from the float network (eq. 20) (default: the zoo "
                        "model's, layerwise for minilm; else asymmetric)")
    q.add_argument("--asymmetric-weight", type=float, default=1.0, metavar="A",
                   help="with asymmetric reconstruction, minimise (1 - A) E_layerwise + A E_asymmetric "
                        "(default 1: eq. 25 alone)")
    q.add_argument("--value-loss", choices=["token", "attention"], default=None,
                   help="loss of self-attention value projections: token (per-token covariance, as every other "
                        "layer) or attention (after each head's attention mixing, one QUBO per head) (default: "
                        "the zoo model's, attention for minilm; else token)")
    q.add_argument("--output-loss", choices=["none", "gauss-newton", "gauss-newton-raw"], default=None,
                   help="gauss-newton: after the solver, every Linear layer's rounding descends on the K-FAC "
                        "Gauss-Newton loss of the model's output, tr(G dW H dW^T), its G estimate shrunk toward "
                        "its diagonal by its noise (-raw: unshrunk); under asymmetric reconstruction about the quantized "
                        "network's inputs (serial runs) (default: the zoo model's; else none)")
    q.add_argument("--no-polish", action="store_true",
                   help="keep the solver's own rounding (default: a single-flip descent on each layer's QUBO "
                        "after the solver, which never raises the loss)")
    q.add_argument("--holdout", type=float, default=0.0, metavar="FRACTION",
                   help="hold out this fraction of the calibration batches; a row takes the solver's or the "
                        "polish's change only where it lowers the held-out loss too (default 0: off)")
    q.add_argument("--skip", action="append", default=[], metavar="LAYER", help="keep this layer in float")
    q.add_argument("--calib-samples", type=int, default=None, help="default: 1024 (digits), 256 (minilm)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--device", default="cpu", help="cpu or cuda")
    q.add_argument("--run-dir", help="checkpoint directory (resume after an interruption)")
    q.add_argument("--scheduler", metavar="local|ADDRESS",
                   help="solve the layers as independent tasks on a Dask cluster: 'local' (a LocalCluster "
                        "of --workers processes) or a scheduler address (needs --reconstruction layerwise; "
                        "extra 'dask')")
    q.add_argument("--workers", type=int, default=None, help="workers of --scheduler local (default: CPU count)")
    q.add_argument("--export", help="write the quantized model (safetensors + manifest) here")
    q.add_argument("--export-onnx", metavar="FILE.onnx",
                   help="also write an ONNX graph with QDQ weights (int8 + per-channel scales), checked "
                        "with onnxruntime against the torch model (extra 'onnx')")
    q.add_argument("--force", action="store_true", help="replace an earlier export at --export / --export-onnx")
    q.add_argument("--no-progress", action="store_true")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.set_defaults(func=run)


def _torch_load(path: str, flag: str):
    """``torch.load`` (tensors only) with a one-line error naming the file and the flag."""
    try:  # (the file's existence is checked before: _load_user_model)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated, or holding objects other than tensors
        raise ValueError(f"{flag} {path} is not a readable tensor file saved with torch.save "
                         f"({first_line(e, 160)})") from None


def _load_user_model(args):
    from ..zoo import ModelBundle
    path, _, factory = args.model.rpartition(":")
    for flag, value in (("--weights", args.weights), ("--calib", args.calib), ("--eval", args.eval)):
        if value and not Path(value).is_file():
            raise FileNotFoundError(f"{flag} {value}: no such file")
    spec = importlib.util.spec_from_file_location("user_model", path)
    if spec is None or not Path(path).exists():
        raise FileNotFoundError(f"model file {path} not found (expected FILE.py:FACTORY)")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if not hasattr(mod, factory):
        raise ValueError(f"{path} defines no function {factory!r}")
    model = getattr(mod, factory)()
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"{path}:{factory} returned {type(model).__name__}, not an nn.Module")
    if args.weights:
        model.load_state_dict(_torch_load(args.weights, "--weights"))
    if not args.calib:
        raise ValueError("a FILE.py:FACTORY model needs --calib INPUTS.pt (a tensor of calibration inputs)")
    calib = _torch_load(args.calib, "--calib")
    if not isinstance(calib, torch.Tensor):
        raise TypeError(f"--calib {args.calib} must hold one tensor, got {type(calib).__name__}")
    evaluation = None
    if args.eval:
        ev = _torch_load(args.eval, "--eval")
        if not (isinstance(ev, (tuple, list)) and len(ev) == 2):
            raise TypeError(f"--eval {args.eval} must hold a pair (inputs, integer labels)")
        evaluation = lambda: (ev[0], ev[1])  # noqa: E731
    return ModelBundle(name=args.model, model=model.eval(), calibration=lambda n, seed: calib[:n],
                       evaluation=evaluation, description="user model")


def run_config(args, defaults: dict):
    """The run's :class:`QuantConfig`: the command line's settings; where ``--solver``,
    ``--reconstruction``, ``--value-loss`` or ``--output-loss`` is not given, the model's ``defaults``
    (:attr:`~qubo_round.zoo.ModelBundle.defaults`), else the library's."""
    from . import LayerOverride, QuantConfig
    chosen = {k: v for k, v in (("solver", args.solver), ("reconstruction", args.reconstruction),
                                ("value_loss", args.value_loss), ("output_loss", args.output_loss))
              if v is not None}
    return QuantConfig(**{**defaults, **chosen}, bits=args.bits, granularity=args.granularity,
                       scheme=args.scheme, narrow=args.narrow, scale_method=args.scale_method,
                       group_size=args.group_size, solver_params=parse_params(args.param), form=args.form,
                       activation=args.activation, asymmetric_weight=args.asymmetric_weight,
                       polish=not args.no_polish, holdout=args.holdout,
                       seed=args.seed, overrides={s: LayerOverride(skip=True) for s in args.skip})


def run(args) -> int:
    from . import QuantConfig, quantize_model, save_quantized
    from .run import check_device
    from .nearest import nearest_model
    from ..zoo import load_model

    if ".py:" not in args.model:
        given = [f for f, v in (("--weights", args.weights), ("--calib", args.calib), ("--eval", args.eval)) if v]
        if given:
            raise ValueError(f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to a FILE.py:FACTORY "
                             f"model only; the zoo model "
                             f"{args.model!r} brings its own weights and data (drop {given[0]})")
    check_device(args.device)
    if args.workers is not None and (args.workers < 1 or not args.scheduler):
        raise ValueError(f"--workers {args.workers}: needs --scheduler and a count >= 1")
    if args.calib_samples is not None and args.calib_samples < 1:
        raise ValueError(f"--calib-samples must be >= 1, got {args.calib_samples}")
    if args.export:
        from .export import check_export_target
        check_export_target(args.export, args.force)  # before the work, not after it
    if args.export_onnx:
        from .onnx_export import check_onnx_target, require_onnx
        require_onnx()
        check_onnx_target(args.export_onnx, args.force)
    bundle = _load_user_model(args) if ".py:" in args.model else load_model(args.model)
    n = args.calib_samples or (256 if args.model == "minilm" else 1024)
    calib = bundle.calibration(n, args.seed)
    config = run_config(args, bundle.defaults)
    log.info("solver %s, %s reconstruction, value loss %s, output loss %s%s", config.solver, config.reconstruction,
             config.value_loss, config.output_loss,
             f" (the {args.model} model's defaults: {bundle.defaults})" if bundle.defaults else "")
    can_eval = bundle.score is not None or bundle.evaluation is not None
    metric = bundle.metric if can_eval else None
    t0 = time.perf_counter()
    qmodel, report = quantize_model(bundle.model, calib, config, device=args.device, run_dir=args.run_dir,
                                    progress=not args.no_progress, client=args.scheduler, workers=args.workers)
    seconds = time.perf_counter() - t0
    qmodel = qmodel.cpu()
    out = {"model": args.model, "bits": args.bits, "solver": config.solver, "granularity": args.granularity,
           "reconstruction": config.reconstruction, "value_loss": config.value_loss, "output_loss": config.output_loss,
           "group_size": args.group_size,
           "scheme": args.scheme, "seed": args.seed, "calibration_samples": n, "seconds": seconds,
           "metric": metric, "float_accuracy": None, "nearest_accuracy": None, "accuracy": None}
    if can_eval:
        first = calib[:1] if isinstance(calib, torch.Tensor) else calib[0]
        near = (nearest_model(bundle.model, first, config) if config.scale_method != "output-mse" else
                quantize_model(bundle.model, calib, QuantConfig(**{**config.__dict__, "solver": "nearest",
                                                                   "solver_params": {}}), progress=False)[0])
        res = {"float": bundle.evaluate(bundle.model), "nearest": near and bundle.evaluate(near),
               "result": bundle.evaluate(qmodel)}
        out.update(float_accuracy=res["float"][metric], nearest_accuracy=res["nearest"][metric],
                   accuracy=res["result"][metric], metrics=res)
    if args.export:
        save_quantized(qmodel, report, args.export, model_name=None if ".py:" in args.model else args.model,
                       force=args.force)
        out["export"] = args.export
    if args.export_onnx:
        from .onnx_export import export_onnx, onnx_max_abs_diff
        # two calibration batches: 64-sample slices of a tensor, or the first two dict batches
        batches = ([calib[i:i + 64] for i in range(0, min(len(calib), 128), 64)]
                   if isinstance(calib, torch.Tensor) else list(calib[:2]))
        export_onnx(qmodel, report.qstate, args.export_onnx, batches[0], force=args.force)
        out["onnx"] = args.export_onnx
        out["onnx_max_abs_diff"] = onnx_max_abs_diff(args.export_onnx, qmodel, batches)
    out["layers"] = report.rows()
    out["skipped"] = report.skipped
    if args.json:
        print(json.dumps(out, default=str))
        return 0
    print(report.to_markdown())
    print()
    name = metric or "accuracy"
    fmt = (lambda v: "n/a" if v is None else f"{100 * v:.2f}%") if name == "accuracy" else \
        (lambda v: "n/a" if v is None else f"{v:.4f}")
    grid = f"{args.granularity}{f', groups of {args.group_size}' if args.group_size else ''} {args.scheme}"
    print(f"| {args.model}, {args.bits}-bit {grid} | {name} |")
    print("|---|---|")
    print(f"| float | {fmt(out['float_accuracy'])} |")
    print(f"| nearest | {fmt(out['nearest_accuracy'])} |")
    print(f"| {config.solver} | {fmt(out['accuracy'])} |")
    print(f"| time | {seconds:.1f} s |")
    if args.export_onnx:
        print(f"\nONNX (QDQ) written to {args.export_onnx}: max |onnxruntime - torch| on two calibration "
              f"batches {out['onnx_max_abs_diff']:.2g}")
    return 0
