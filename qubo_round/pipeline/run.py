"""Sequential, asymmetric reconstruction of a whole network, layer by layer (eq. 25).

Layers are processed in execution order. Layer ``i`` sees inputs ``x_hat`` from the network whose
layers ``< i`` are already quantized, and targets from the float network on the same batches
(``reconstruction="layerwise"``: ``x_hat = x``, the float network's inputs, eq. 20).
Each layer's rounding problem is the asymmetric QUBO (covariance form), solved by any registered
solver, or, for the activation-aware loss, the data form of the relaxation. Every finished layer
is checkpointed at once; a rerun with the same configuration resumes after the last one.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import time

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..attention import attention_sites, capture_mixed_stats
from ..builders import asymmetric_problem, covariance_problem
from ..executors import DaskExecutor
from ..extras import require
from ..gauss_newton import kronecker_factors
from ..grid import RoundingSpace, rounding_space
from ..kronecker import KroneckerLoss, asymmetric_target, kronecker_descent
from ..layers import LayerAdapter
from ..problem import stack_rows
from ..solvers import get_solver, solver_class
from ..solvers.greedy import polish
from ..stats import FinishedOutputs, FloatInputs, capture_stats, iterate_batches
from ..threads import limit_threads
from .checkpoint import RunDirectory
from .config import QuantConfig
from .data_form import solve_data_form
from .graph import execution_order, fold_batchnorm, followed_by_relu, unsupported_layers
from .parallel import LayerTask, check_parallel_config
from .qstate import LayerQState
from .report import LayerReport, QuantReport
from .state import LayerStep, RunState

log = logging.getLogger(__name__)

#: ``rtol`` of the output-loss descent: it stops when 20 rounds lowered the loss by less than
#: this fraction (the long tail of single flips adds little).
DESCENT_RTOL = 1e-3


def _to_device(batch, device):
    if isinstance(batch, dict):
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    return batch.to(device)


def _num_samples(batch) -> int:
    if isinstance(batch, dict):
        return int(next(v for v in batch.values() if isinstance(v, torch.Tensor)).shape[0])
    return int(batch.shape[0])


def _digest(h, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def _signature(model: nn.Module, batches: list) -> dict:
    """What identifies the float model and the calibration data of a run (to refuse resuming
    on another model or other data): SHA-256 of every state-dict tensor (name, dtype, shape,
    bytes) and of every calibration batch."""
    sd = model.state_dict()
    hw = hashlib.sha256()
    for k in sorted(sd):
        hw.update(k.encode())
        _digest(hw, sd[k])
    hc = hashlib.sha256()
    for b in batches:
        items = sorted(b.items()) if isinstance(b, dict) else [("", b)]
        for k, t in items:
            hc.update(str(k).encode())
            if isinstance(t, torch.Tensor):
                _digest(hc, t)
            else:
                hc.update(repr(t).encode())
    return {"class": type(model).__name__, "parameters": sum(p.numel() for p in model.parameters()),
            "weights_sha256": hw.hexdigest(), "calibration_sha256": hc.hexdigest(),
            "calibration_samples": sum(_num_samples(b) for b in batches)}


def _solver_for(spec: str, params: dict, device: str, progress: bool = False, threads: int | None = None):
    """The layer's solver; ``device``, ``progress`` (a bar over the iterations) and, for the
    ``threaded`` solvers, ``threads`` (None: not passed) are passed to the solvers that have these
    parameters (a chain forwards them to its stages), unless the layer's settings give them."""
    cls = solver_class(spec)
    fields = {f.name for f in dataclasses.fields(cls.Params)}
    extra = {k: v for k, v in (("device", device), ("progress", progress)) if k in fields and k not in params}
    solver = get_solver(spec, **params, **extra)
    if threads and solver.threaded and "threads" in fields and "threads" not in params:
        # (an instance's flag: a chain is threaded when one of its stages is)
        solver = get_solver(spec, **params, **extra, threads=threads)
    return solver


#: Work per weight and step that both forms of AdaRound do alike (rectified sigmoid, regulariser,
#: Adam: some 25 element-wise passes over rows x cols), in flop-equivalents of their matrix
#: products. On the digits layers (CPU, one thread, ``benchmarks/results/forms_speed.md``) fc1
#: (64 x 512) costs about as much per step in the data form (4 rows cols 32 = 4.2 Mflop) as in the
#: covariance form (2 rows cols^2 = 34 Mflop): an 8x difference in flops is at most a 1.5x
#: difference in time, i.e. S of 2000 or more. 2000 and the earlier 4000 both leave every digits
#: and MiniLM layer in the covariance form (the MiniLM benchmark's log: all 36 layers).
SHARED_COST_PER_WEIGHT = 2000
#: Without an activation the data form is a mini-batch estimate of the covariance form's exact
#: objective (a noisier one the fewer batch columns per input column; on the digits layers its
#: final loss was never lower, and 6-27% higher on fc1, at 2-4 bits): ``auto`` takes it only when
#: it is at least this many times cheaper per step.
DATA_FORM_MARGIN = 2.0


def choose_form(form: str, rows: int, cols: int, batch_cols: int, activation: str, solver: str) -> str:
    """``auto``: covariance for solvers without a data form (capability ``has_data_form``);
    otherwise the data form when an activation-aware loss is asked for (not a QUBO), else the
    data form only when its estimated cost per step, ``rows cols (4 batch_cols + S)``, is at most
    ``1 / DATA_FORM_MARGIN`` of the covariance form's, ``rows cols (2 cols + S)`` (``S = SHARED_COST_PER_WEIGHT``, the work both
    forms share): the exact objective unless mini-batches are much cheaper (large fully
    connected layers)."""
    if form != "auto":
        return form
    if not solver_class(solver).has_data_form:
        return "covariance"
    if activation != "none":
        return "data"
    cov = 2 * cols + SHARED_COST_PER_WEIGHT
    data = 4 * batch_cols + SHARED_COST_PER_WEIGHT
    return "data" if DATA_FORM_MARGIN * data < cov else "covariance"


def check_device(device: str) -> None:
    """``cpu``, ``cuda`` or ``cuda:N``, and CUDA present when asked for; else a one-line error
    (checked before any work: the CLI calls it before loading the model)."""
    if not (device in ("cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())):
        raise ValueError(f"--device must be cpu, cuda or cuda:N, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but CUDA is not available; use device='cpu'")


def quantize_model(model: nn.Module, calibration, config: QuantConfig | None = None, *,
                   device: str = "cpu", run_dir=None, progress: bool = True, client=None,
                   workers: int | None = None, threads: int | None = None) -> tuple[nn.Module, QuantReport]:
    """Quantize every supported layer of ``model``; return ``(quantized copy, report)``.

    Args:
        model: any ``nn.Module`` (left unchanged).
        calibration: unlabelled inputs: a tensor (N, ...), a DataLoader, or an iterable of batches
            (tensors, or dicts of tensors passed as keyword arguments).
        config: :class:`QuantConfig` (bits, grid, solver and settings, form, overrides, seed).
        device: ``cpu`` or ``cuda``.
        run_dir: checkpoint directory; a rerun with the same configuration resumes.
        progress: show progress bars.
        client: solve the layers as independent tasks (:mod:`qubo_round.pipeline.parallel`;
            layer-wise reconstruction): a ``distributed.Client``, a scheduler address or
            ``"local"`` (a LocalCluster of ``workers`` single-threaded processes). None: serial.
        threads: CPU threads of the ``threaded`` covariance-form solvers (the relaxations' torch
            threads; a chain's relaxation stages), unless the layer's settings give them; default:
            torch's setting, ``torch.get_num_threads()``. Layer-parallel workers use one each.
    """
    config = config or QuantConfig()
    check_device(device)
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive integer or None (torch's setting), got {threads!r}")
    threads = threads or torch.get_num_threads()
    if client is not None:
        check_parallel_config(config)
        if device != "cpu":
            raise ValueError("layer-parallel runs solve on the workers' CPUs; use device='cpu' with client=")
        require("distributed", "dask", "a layer-parallel run")  # before the run directory is written
    t0 = time.perf_counter()
    batches = [_to_device(b, device) for b in iterate_batches(calibration)]
    if not batches:
        raise ValueError("calibration data is empty (no batch); pass at least one input")
    batches, hold = split_holdout(batches, config.holdout)
    fmodel = copy.deepcopy(model).eval().to(device)
    folded = fold_batchnorm(fmodel) if config.fold_bn else []
    order = execution_order(fmodel, batches[0])
    if not order:
        raise ValueError(f"the model ({type(model).__name__}) has no supported layer that runs on the "
                         "calibration data; supported: Linear, Conv1d, Conv2d")
    unknown = sorted(set(config.overrides) - set(order))
    if unknown:
        raise ValueError(f"overrides name layer(s) {unknown} that are not quantizable layers of the model; "
                         f"layers: {', '.join(order)}")
    _check_layer_settings(config, order, device)
    sites = mixed_sites(fmodel, config, order)
    if sites:  # one batch through every site: an unsupported attention is refused before any work
        capture_mixed_stats(fmodel, list(sites.values()), batches[:1])
    qmodel = copy.deepcopy(fmodel)
    report = QuantReport(skipped=unsupported_layers(fmodel, order), folded_bn=folded, config=config.to_dict())
    relu_after = followed_by_relu(fmodel) if config.activation == "relu" else set()
    rd = RunDirectory(run_dir, config, _signature(model, batches + hold)) if run_dir is not None else None
    # Identical statistics at a fraction of the forward passes: the float network never changes,
    # so its layer inputs are captured once (as far as the RAM budget allows) instead of a float
    # pass per layer; the quantized network's pass ends at the layer, and its finished submodules
    # (embeddings, finished blocks) replay their outputs instead of recomputing them.
    if client is not None:
        run = RunState(config=config, device=device, progress=progress, fmodel=fmodel, qmodel=qmodel, batches=batches,
                       threads=1, hold=hold, relu_after=relu_after, run_dir=rd, float_inputs=None, replay=None, report=report,
                       sites=sites)
        executor = DaskExecutor(client, workers)
        try:
            log.info("layer-parallel run on %s", executor.description)
            _run_parallel(run, order, executor)
        finally:
            executor.close()
        report.seconds = time.perf_counter() - t0
        return qmodel, report
    todo = [n for n in order if not config.for_layer(n).skip]
    # the factors of the layers a resumed run still has to do (a layer's G and H do not depend on
    # the other layers asked for)
    factors = output_factors(fmodel, config, [n for i, n in enumerate(order) if not config.for_layer(n).skip
                                              and (rd is None or not rd.finished(i, n))], batches)
    float_inputs = FloatInputs(fmodel, todo, batches, config.ram_budget_mb * 2**20)
    replay = FinishedOutputs(qmodel, todo, config.ram_budget_mb * 2**20)
    run = RunState(config=config, device=device, progress=progress, fmodel=fmodel, qmodel=qmodel, batches=batches,
                   threads=threads, hold=hold, relu_after=relu_after, run_dir=rd, float_inputs=float_inputs, replay=replay, report=report,
                   sites=sites, factors=factors)
    try:
        _run_layers(run, order)
    finally:
        replay.close()
    log.info("forward passes: float network %d, finished submodules replayed %d time(s), computed %d",
             float_inputs.passes, replay.hits, replay.misses)
    report.seconds = time.perf_counter() - t0
    return qmodel, report


def _check_layer_settings(config: QuantConfig, order: list[str], device: str) -> None:
    """Every layer's grid, solver and solver parameters, checked before the first layer runs (a
    typo in an override for the last layer must not cost the layers before it)."""
    seen = set()
    for name in order:
        lcfg = config.for_layer(name)
        if lcfg.skip:
            continue
        config.grid(lcfg.bits)
        key = (lcfg.solver, repr(sorted(lcfg.solver_params.items())))
        if key in seen:
            continue
        seen.add(key)
        try:
            _solver_for(lcfg.solver, dict(lcfg.solver_params), device)
        except (ValueError, TypeError, KeyError) as e:
            raise type(e)(f"layer {name}: {e}") from None


def mixed_sites(model: nn.Module, config: QuantConfig, order: list[str]) -> dict:
    """The value projections solved on the attention-mixed loss (``value_loss='attention'``):
    value name -> :class:`~qubo_round.attention.AttentionSite`, for the sites whose value layer
    is quantized; ``{}`` with ``value_loss='token'``. One-line errors before any work when the
    model has none, or an override asks for the data form on one."""
    if config.value_loss != "attention":
        return {}
    found = attention_sites(model)
    sites = {n: site for n, site in found.items() if n in order and not config.for_layer(n).skip}
    if not sites:
        raise ValueError(f"value_loss='attention': the model ({type(model).__name__}) has no quantized self-attention "
                         "value projection (a module with query, key and value Linear children); use value_loss='token'")
    data = [n for n in sites if config.for_layer(n).form == "data"]
    if data:
        raise ValueError(f"value_loss='attention' solves {data[0]} on its mixed covariance QUBO; its override "
                         "asks for form='data' (drop the override's form)")
    return sites


def _run_layers(run: RunState, order: list[str]) -> None:
    """Every layer in execution order: resumed from the run directory, or quantized and saved."""
    qmods = dict(run.qmodel.named_modules())
    bar = tqdm(order, desc="layers", disable=not run.progress, unit="layer")
    for index, name in enumerate(bar):
        bar.set_postfix_str(name)
        lcfg = run.config.for_layer(name)
        if lcfg.skip:
            run.report.skipped[name] = "skipped by override"
            continue
        done = _resumed(run, index, name, lcfg, qmods)
        if done is None:
            qs, row = _quantize_layer(run, LayerStep(index=index, name=name, lcfg=lcfg, t0=time.perf_counter()))
        else:
            qs, row = done
            run.float_inputs.discard(name)
        _finish(run, name, qs, row, qmods)
        run.replay.finish(name)
        if done is None and run.run_dir is not None:
            run.run_dir.save(index, name, qs, row)


def solve_layer(task: LayerTask):
    """A worker's job in a layer-parallel run (:mod:`qubo_round.pipeline.parallel`): the layer's
    QUBOs built from the task's weights and ``H``, solved, polished and written back by the
    serial steps. Returns ``(LayerQState, LayerReport)``."""
    t0 = time.perf_counter()
    problems = _group_problems(task.name, task.weights, [(H, H, H) for H in task.H], task.grid,
                               row_blocks=task.row_blocks)
    rows, cols = task.weights[0].shape
    step = LayerStep(index=task.index, name=task.name, lcfg=task.lcfg, t0=t0, grid=task.grid, form="covariance",
                     seed=task.seed, problems=problems, weight_shape=task.weight_shape, groups=len(task.weights),
                     rows=rows, cols=cols, row_blocks=task.row_blocks)
    _solve_groups(step, "cpu", False, 1)
    _polish(step)
    return _write_back(step)


def _run_parallel(run: RunState, order: list[str], executor) -> None:
    """Every layer as an independent task on ``executor``: checkpoints first, then one float pass
    for the statistics of the missing layers, their tasks, results applied in execution order."""
    qmods = dict(run.qmodel.named_modules())
    fmods = dict(run.fmodel.named_modules())
    done, tasks = {}, []
    for index, name in enumerate(order):
        lcfg = run.config.for_layer(name)
        if lcfg.skip:
            run.report.skipped[name] = "skipped by override"
            continue
        got = _resumed(run, index, name, lcfg, qmods)
        if got is not None:
            done[name] = got
        else:
            tasks.append((index, name, lcfg, run.config.grid(lcfg.bits)))
    if tasks:
        names = [name for _, name, _, _ in tasks]
        token = [n for n in names if n not in run.sites]
        stats = capture_stats(run.fmodel, token, run.batches) if token else {}
        mixed = [run.sites[n] for n in names if n in run.sites]
        if mixed:
            stats.update(capture_mixed_stats(run.fmodel, mixed, run.batches))
        items = []
        for index, name, lcfg, grid in tasks:
            ad = LayerAdapter(fmods[name], name)
            items.append(LayerTask(index=index, name=name, lcfg=lcfg, grid=grid, seed=run.config.seed + index,
                                   weights=list(ad.weights()), H=[acc.H for acc in stats[name].groups],
                                   weight_shape=tuple(ad.module.weight.shape), row_blocks=stats[name].row_blocks))
        del stats
        bar = tqdm(total=len(items), desc="layers", disable=not run.progress, unit="layer")
        for task, (qs, row) in executor.map_unordered(solve_layer, items):
            done[task.name] = (qs, row)
            if run.run_dir is not None:
                run.run_dir.save(task.index, task.name, qs, row)
            bar.update(1)
        bar.close()
    for name in order:
        if name in done:
            _finish(run, name, *done[name], qmods)


def _resumed(run: RunState, index: int, name: str, lcfg, qmods: dict):
    """The layer's checkpoint (validated against its grid and weight shape), or None."""
    if run.run_dir is None:
        return None
    done = run.run_dir.load(index, name, run.config.grid(lcfg.bits).limits, tuple(qmods[name].weight.shape))
    if done is not None:
        log.info("layer %s: resumed from the run directory", name)
    return done


def _finish(run: RunState, name: str, qs, row, qmods: dict) -> None:
    """A finished layer: its weights written into the quantized model, its row into the report."""
    qs.apply(qmods[name])
    run.report.layers.append(row)
    run.report.qstate[name] = qs


def _quantize_layer(run: RunState, step: LayerStep):
    """One layer's steps: capture its statistics and build its QUBOs, solve, polish, choose on
    the held-out batches, write back. Returns (its quantized state, its report row)."""
    _capture(run, step)
    _solve(run, step)
    _polish(step)
    if run.hold:
        _holdout_choice(run, step)
    if step.name in run.factors and not solver_class(step.lcfg.solver).baseline:  # nearest stays the reference
        _output_descent(step.kronecker or run.factors[step.name], step)
    return _write_back(step)


def output_factors(fmodel: nn.Module, config: QuantConfig, names: list[str], batches) -> dict:
    """``output_loss='gauss-newton'``: the Kronecker factors of the Linear layers among ``names``
    (one float pass and ``output_probes`` backward passes per batch); else ``{}``. Layers of other
    kinds keep their layer loss (their report rows say so: no output loss)."""
    if config.output_loss == "none":
        return {}
    mods = dict(fmodel.named_modules())
    linear = [n for n in names if isinstance(mods[n], nn.Linear)]
    if not linear:  # every layer resumed (or none is Linear): no pass at all
        return {}
    if len(linear) < len(names):
        log.info("output_loss: %d layer(s) are not Linear and keep their layer loss: %s", len(names) - len(linear),
                 [n for n in names if n not in linear][:8])
    t = time.perf_counter()
    factors = kronecker_factors(fmodel, linear, batches, probes=config.output_probes, seed=config.seed,
                                shrink=config.output_loss == "gauss-newton")
    log.info("output_loss: Gauss-Newton factors of %d layers in %.1f s", len(linear), time.perf_counter() - t)
    return factors


def _asymmetric_output_loss(factors, ad, st, a: float):
    """Asymmetric reconstruction: the layer's Kronecker output loss with the quantized network's
    inputs, ``tr(G (W_hat - W*) H_hat (W_hat - W*)^T)`` (:func:`~qubo_round.kronecker.asymmetric_target`),
    ``H_hat`` and ``C`` blended as the layer's QUBO (``asymmetric_weight``); ``G`` is the float
    network's. Value projections on the attention-mixed loss keep the float network's ``H``."""
    (W,), (acc,) = ad.weights(), st.groups
    _, H_hat, C = _moments(acc, a)
    return KroneckerLoss(factors.G, H_hat, shrinkage=factors.shrinkage, target=asymmetric_target(W, H_hat, C))


def _output_descent(loss, step: LayerStep) -> None:
    """The layer's rounding (its row blocks as one weight) descended on its Kronecker output loss."""
    space = RoundingSpace.stack([p.space for p in step.problems])
    V, info = kronecker_descent(loss, space, np.concatenate(step.Vs), rtol=DESCENT_RTOL)
    cuts = np.cumsum([len(v) for v in step.Vs])[:-1]
    step.Vs = np.split(V, cuts)
    step.output = dict(output_loss_start=info["loss_start"], output_loss=info["loss"], output_flips=info["flips"],
                       output_seconds=info["seconds"], output_shrinkage=loss.shrinkage)
    log.info("layer %s: output loss %.4g -> %.4g, %d flips, %.2f s", step.name, info["loss_start"], info["loss"],
             info["flips"], info["seconds"])


def _capture(run: RunState, step: LayerStep) -> None:
    """The layer's statistics, its loss form and activation, and its QUBOs (one per group)."""
    config, lcfg, name = run.config, step.lcfg, step.name
    step.grid = config.grid(lcfg.bits)
    step.ad = ad = LayerAdapter(dict(run.fmodel.named_modules())[name], name)
    step.weight_shape, step.groups, step.rows, step.cols = tuple(ad.module.weight.shape), ad.groups, ad.rows, ad.cols
    if name in run.sites:
        st = _mixed_stats(run, name)
        run.float_inputs.discard(name)
    else:
        # layer-wise: H from the float inputs alone (x_hat = x; no pass of the quantized network)
        st = capture_stats(run.fmodel, [name], run.batches, model_hat=None if run.layerwise else run.qmodel,
                           float_inputs=run.float_inputs, replay=run.replay)[name]
    step.capture_seconds = time.perf_counter() - step.t0
    activation = "relu" if name in run.relu_after else "none"
    positions = st.count // sum(_num_samples(b) for b in run.batches)
    step.form = "covariance" if name in run.sites else choose_form(
        lcfg.form, ad.rows, ad.cols, config.batch_size * max(positions, 1), activation, lcfg.solver)
    if step.form == "data" and config.asymmetric_weight != 1:
        step.form = "covariance"  # a blended loss is a covariance-form QUBO (QuantConfig refuses form='data')
    if step.form == "covariance" and activation != "none":
        log.warning("layer %s: the covariance form (solver %s) cannot include the ReLU; using the "
                    "linear loss", name, lcfg.solver)
        activation = "none"
    step.activation = activation
    # Layer-wise reconstruction (eq. 20): x_hat = x, so H_hat = C = H (the float inputs only).
    step.problems = _layer_problems(name, ad, st, run.asymmetric_weight, grid=step.grid)
    if name in run.factors and not run.layerwise and name not in run.sites:
        step.kronecker = _asymmetric_output_loss(run.factors[name], ad, st, run.asymmetric_weight)
    step.row_blocks = st.row_blocks
    step.seed = config.seed + step.index


def _mixed_stats(run: RunState, name: str, batches=None):
    """The attention-mixed statistics of value projection ``name`` on the fitted batches (or on
    ``batches``). Layer-wise, on the fitted batches: every site's, captured in one float pass at
    the first site and kept (they depend on the float network only); otherwise this site's, with
    the partly quantized network's inputs."""
    if batches is None and run.layerwise:
        if name not in run.mixed:
            run.mixed.update(capture_mixed_stats(run.fmodel, [s for n, s in run.sites.items()
                                                              if n not in run.report.qstate], run.batches))
        return run.mixed.pop(name)
    return capture_mixed_stats(run.fmodel, [run.sites[name]], run.batches if batches is None else batches,
                               model_hat=None if run.layerwise else run.qmodel)[name]


def _solve(run: RunState, step: LayerStep) -> None:
    """The layer's solver on its QUBOs (covariance form) or on its mini-batches (data form)."""
    if step.form == "covariance":
        _solve_groups(step, run.device, run.progress, run.threads)
    else:
        step.Vs, step.statuses, info = solve_data_form(run, step)
        step.infos, step.solve_seconds = [info], info["seconds"]
        step.capture_seconds += info["capture_seconds"]


def _solve_groups(step: LayerStep, device: str, progress: bool, threads: int) -> None:
    """The covariance form: the layer's solver on its groups' QUBOs (row blocks, the heads of a
    value projection, one by one: stacking them into per-row matrices, 450 MB for a MiniLM value
    projection, costs more than the batched solve saves)."""
    step.Vs, step.statuses, step.infos, step.solve_seconds = _solve_covariance(
        step.problems, step.lcfg, step.seed, device, progress, threads, stack=step.row_blocks == 1)


def _polish(step: LayerStep) -> None:
    """Single-flip descent on the exact QUBO (``polish``; not for the baseline solver, nor when
    the loss went through a ReLU, which the QUBO does not see). Keeps the solver's own rounding
    (``solver_Vs``) and round-to-nearest (``near``) for the held-out choice and the report."""
    step.solver_Vs = step.Vs
    step.near = [p.space.nearest() for p in step.problems]
    if step.lcfg.polish and not solver_class(step.lcfg.solver).baseline and step.activation == "none":
        step.solver_loss = _loss(step.problems, step.Vs)
        t = time.perf_counter()
        step.Vs, step.flips = polish_roundings(step.problems, step.Vs)
        step.polish_seconds = time.perf_counter() - t


def _write_back(step: LayerStep):
    """The layer's quantized state and its report row."""
    problems, Vs, near = step.problems, step.Vs, step.near
    loss, nearest_loss = _loss(problems, Vs), _loss(problems, near)
    free = sum(int((~p.space.fixed_mask).sum()) for p in problems)
    changed = sum(int((v != n).sum()) for v, n in zip(Vs, near))
    qs = LayerQState.from_spaces([p.space for p in problems], Vs, step.weight_shape)
    its = [i["iterations_done"] for i in step.infos if i.get("iterations_done") is not None]
    row = LayerReport(name=step.name, index=step.index, groups=step.groups, rows=step.rows * step.groups, cols=step.cols,
                      bits=step.grid.bits, solver=step.lcfg.solver, form=step.form, activation=step.activation,
                      nearest_loss=nearest_loss, loss=loss, changed_fraction=changed / max(free, 1),
                      seconds=time.perf_counter() - step.t0,
                      status="time_limit" if "time_limit" in step.statuses else step.statuses[0],
                      solver_loss=step.solver_loss, polish_flips=step.flips, capture_seconds=step.capture_seconds,
                      solve_seconds=step.solve_seconds, polish_seconds=step.polish_seconds,
                      iterations=max(its) if its else None, **step.holdout, **step.output)
    log.info("layer %s: %s/%s loss %.4g (nearest %.4g%s), %.1f%% changed, %.2fs", step.name, step.lcfg.solver,
             step.form, loss, nearest_loss,
             "" if step.solver_loss is None else f", solver {step.solver_loss:.4g}, {step.flips} polish flips",
             100 * row.changed_fraction, row.seconds)
    return qs, row


def _layer_problems(name, ad, st, a: float, *, grid=None, spaces=None) -> list:
    """The layer's groups as asymmetric reconstruction QUBOs from the statistics ``st``, of the
    loss ``(1 - a) E_layerwise + a E_asymmetric`` (quadratic ``(1 - a) H + a H_hat``, cross term
    ``(1 - a) H + a C``; ``a = 0``: layer-wise reconstruction, ``H_hat = C = H``), on ``grid`` or
    on the given rounding ``spaces`` (the same variables as another set of statistics).

    One BLAS thread: building a problem checks H_hat with an eigendecomposition (LAPACK syevd),
    whose multithreaded OpenBLAS path collapses on a busy machine (1536 columns on 2 shared
    cores: 20 s with 2 threads, 1.3 s with 1); the matrix products here are small."""
    return _group_problems(name, ad.weights(), [_moments(acc, a) for acc in st.groups], grid, spaces,
                           row_blocks=st.row_blocks)


def _moments(acc, a: float) -> tuple:
    """``(H, H_hat, C)`` of the blended loss, each asymmetric moment ``S`` as ``(1 - a) H + a S``
    (exactly ``S`` at ``a = 1``); at ``a = 0`` (layer-wise) ``H`` three times, the same object
    (:func:`_group_problems` then builds the covariance QUBO), without reading the asymmetric sums."""
    H = acc.H
    if a == 0:
        return H, H, H
    blend = (lambda S: S) if a == 1 else (lambda S: (1 - a) * H + a * S)
    return H, blend(acc.H_hat), blend(acc.C)


def _group_problems(name, weights, stats, grid=None, spaces=None, row_blocks: int = 1) -> list:
    """One asymmetric reconstruction QUBO per group from its weights and ``(H, H_hat, C)``
    (one BLAS thread: see :func:`_layer_problems`). With ``row_blocks`` k > 1 the single weight
    group's rows are split into k blocks (the heads of a value projection), one set of statistics
    each, on the rounding space of the whole weight (a per-tensor scale stays one scale)."""
    if row_blocks > 1:
        W, = weights
        cuts = np.array_split(np.arange(W.shape[0]), row_blocks)
        if len(stats) != row_blocks or W.shape[0] % row_blocks:
            raise ValueError(f"layer {name}: {len(stats)} row blocks of statistics for {W.shape[0]} rows, "
                             f"expected {row_blocks} equal blocks")
        if spaces is None and grid.granularity == "tensor":  # one scale for all heads (H: their mean)
            with limit_threads(1, torch=False):
                full = rounding_space(W, grid, H=sum(H for H, _, _ in stats) / row_blocks)
            spaces = [full.select_rows(r) for r in cuts]
        weights = [W[r] for r in cuts]
    spaces = spaces or [None] * len(stats)
    with limit_threads(1, torch=False):
        # layer-wise (H_hat = C = H): the covariance QUBO, the same loss in fewer products
        return [covariance_problem(W, H, grid, space=sp, layer=name, group=g) if H_hat is H and C is H else
                asymmetric_problem(W, H, H_hat, C, grid, space=sp, layer=name, group=g)
                for g, (W, (H, H_hat, C), sp) in enumerate(zip(weights, stats, spaces))]


def _solve_covariance(problems, lcfg, seed: int, device: str, progress: bool, threads: int, stack: bool = True):
    """The layer's solver on its groups' QUBOs (``stack``: as one stacked problem for the solvers
    that batch groups). Returns (roundings V, statuses, the solvers' info dicts, seconds inside
    the solver)."""
    solver = _solver_for(lcfg.solver, dict(lcfg.solver_params), device, progress, threads)
    t0 = time.perf_counter()
    if len(problems) > 1 and solver.batches_groups and stack:
        # e.g. a relaxation runs the groups of a grouped conv as one batched problem (per-row H)
        r = solver.solve(stack_rows(problems), seed=seed)
        cuts = np.cumsum([p.rows for p in problems])[:-1]
        Vs = [p.to_rounding(X) for p, X in zip(problems, np.split(r.best, cuts))]
        return Vs, [r.status] * len(problems), [r.info], time.perf_counter() - t0
    results = [solver.solve(p, seed=seed) for p in problems]
    return ([p.to_rounding(r.best) for p, r in zip(problems, results)], [r.status for r in results],
            [r.info for r in results], time.perf_counter() - t0)


def split_holdout(batches: list, fraction: float) -> tuple[list, list]:
    """``(fit, held out)``: the last ``max(1, round(fraction * len))`` batches held out (none
    when ``fraction`` is 0). Needs a batch left to fit on."""
    if not fraction:
        return batches, []
    k = max(1, int(round(fraction * len(batches))))
    if k >= len(batches):
        raise ValueError(f"holdout={fraction} of {len(batches)} calibration batch(es) leaves none to fit on; "
                         "give more calibration data (or smaller batches) or a smaller holdout")
    return batches[:-k], batches[-k:]


def _holdout_choice(run: RunState, step: LayerStep) -> None:
    """The layer's problems on the held-out batches (same rounding spaces), and the per-row
    choice of :func:`accept_on_holdout` among nearest, the solver's and the polished rounding."""
    if step.name in run.sites:
        st = _mixed_stats(run, step.name, run.hold)
    else:
        st = capture_stats(run.fmodel, [step.name], run.hold, model_hat=None if run.layerwise else run.qmodel)[step.name]
    held = _layer_problems(step.name, step.ad, st, run.asymmetric_weight, spaces=[p.space for p in step.problems])
    near, solver_V, polished_V = step.near, step.solver_Vs, step.Vs
    stages = [near, solver_V] if polished_V is solver_V else [near, solver_V, polished_V]
    step.Vs, refused = accept_on_holdout(step.problems, held, stages)
    step.holdout = dict(holdout_nearest_loss=_loss(held, near), holdout_loss=_loss(held, step.Vs),
                        rows_refused=refused)
    log.info("layer %s: held-out loss %.4g (nearest %.4g), %d row change(s) refused", step.name,
             step.holdout["holdout_loss"], step.holdout["holdout_nearest_loss"], refused)


def accept_on_holdout(fit, held, stages: list[list[np.ndarray]]) -> tuple[list[np.ndarray], int]:
    """Per row, walk the candidate roundings ``stages`` (e.g. nearest, solver, polished; each a
    list of (rows, cols) roundings, one per group) and move to the next stage's row only where it
    lowers the held-out row loss (``held``) without raising the fitted one (``fit``).

    Returns the chosen roundings and the number of (row, stage) changes refused."""
    out, refused = [], 0
    for g, (pf, ph) in enumerate(zip(fit, held)):
        cur = stages[0][g].copy()
        ef = pf.energies(pf.from_rounding(cur))
        eh = ph.energies(ph.from_rounding(cur))
        for st in stages[1:]:
            cand = st[g]
            cf = pf.energies(pf.from_rounding(cand))
            ch = ph.energies(ph.from_rounding(cand))
            moved = np.any(cand != cur, axis=1)
            take = moved & (ch < eh) & (cf <= ef)
            refused += int((moved & ~take).sum())
            cur[take], ef[take], eh[take] = cand[take], cf[take], ch[take]
        out.append(cur)
    return out, refused


def _loss(problems, Vs: list[np.ndarray]) -> float:
    """The layer's loss: the QUBO energies of the groups' roundings ``Vs``, summed."""
    return float(sum(p.energy(p.from_rounding(v)) for p, v in zip(problems, Vs)))


def polish_roundings(problems, Vs: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    """Steepest single-flip descent of each group's rounding ``V`` (rows, cols) on its exact QUBO
    (:func:`~qubo_round.solvers.greedy.polish`, the function of the ``polish`` composite solver),
    to a 1-flip local minimum: the energy never rises. Returns the new roundings and the number of flips made.

    A relaxation ends with a threshold (``h >= 0.5``) whose rounding is rarely a local minimum of
    the QUBO it relaxes: where entries are still soft at the end, or where the regulariser pushed
    an entry the wrong way, one flip lowers the loss. On the digits model at 3 bits this took
    AdaRound's total loss (10k iterations) from 2.48 to 1.98, in 6-11 ms for all five layers
    (``benchmarks/forms_speed.py``, column "polish ms")."""
    out, flips = [], 0
    for p, V in zip(problems, Vs):
        X0 = p.apply_fixed(p.from_rounding(V))
        X = polish(p, X0)
        flips += int((X != X0).sum())
        out.append(p.to_rounding(X))
    return out, flips
