"""Export of a quantized model: integer weights, scales and zero points in one safetensors file,
the remaining (float) tensors beside them, and a JSON manifest; plus the loader."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import first_line
from .qstate import LayerQState
from .report import QuantReport

FORMAT = "qubo-round-quantized"
VERSION = 1


def check_export_target(out_dir, force: bool = False) -> Path:
    """Refuse an export target that is a symlink, a file, or a non-empty folder that is not an
    earlier export (or one at all without ``force``): an export never follows links nor
    overwrites what it did not write. Call it before long work; :func:`save_quantized` does too."""
    out = Path(out_dir)
    _check_parents(out)
    if out.is_symlink():
        raise ValueError(f"export target {out} is a symbolic link; give a real folder path")
    if out.exists() and not out.is_dir():
        raise ValueError(f"export target {out} is a file; give a folder path")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise FileExistsError(f"export target {out} exists and is not empty; choose a new folder or pass "
                                  "--force (force=True) to replace an earlier export")
        m = out / "manifest.json"
        names = {p.name for p in out.iterdir()}
        if m.is_symlink() or not m.is_file() or not names <= {"manifest.json", "model.safetensors"}:
            raise ValueError(f"export target {out} is not an earlier export (only manifest.json and "
                             f"model.safetensors, no links); --force replaces only that")
    return out


def _check_parents(out: Path) -> None:
    """Every existing ancestor of ``out`` must be a folder (a file there fails only when writing)."""
    for parent in out.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"cannot write {out}: {parent} is a file, not a folder; choose another path")
            return


def save_quantized(qmodel: nn.Module, report: QuantReport, out_dir, model_name: str | None = None, *,
                   force: bool = False) -> Path:
    """Write ``out_dir/model.safetensors`` and ``out_dir/manifest.json``; returns ``out_dir``.

    Quantized layers are stored as ``<layer>.q`` (int16 integers), ``<layer>.scale`` and
    ``<layer>.zero_point`` (float64 per output channel, or per channel and group with a
    ``<layer>.group_size``) and ``<layer>.limits``; every other tensor
    of the state dict as ``float.<key>``. Atomic: the files are written into a new sibling folder
    that then takes the target's name, so a crash leaves either the old export or the new one
    (:func:`check_export_target` says what may be replaced).
    """
    out = check_export_target(out_dir, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _write_export(qmodel, report, tmp, model_name)
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.rename(out, old / out.name)
        os.rename(tmp, out)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write_export(qmodel: nn.Module, report: QuantReport, out: Path, model_name: str | None) -> None:
    tensors: dict[str, torch.Tensor] = {}
    quantized_keys = {f"{name}.weight" for name in report.qstate}
    for name, qs in report.qstate.items():
        tensors.update(qs.tensors(f"q.{name}"))
    for key, t in qmodel.state_dict().items():
        if key not in quantized_keys:
            tensors[f"float.{key}"] = t.detach().cpu().contiguous()
    save_file(tensors, str(out / "model.safetensors"))
    manifest = {"format": FORMAT, "version": VERSION, "model": model_name, "model_class": type(qmodel).__name__,
                "layers": {n: {"shape": list(qs.q.shape), "qmin": qs.qmin, "qmax": qs.qmax,
                               **({"group_size": qs.group_size} if qs.group_size else {})}
                           for n, qs in report.qstate.items()},
                "config": report.config, "skipped": report.skipped, "folded_bn": report.folded_bn}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))


def load_quantized(out_dir, model: nn.Module | None = None) -> nn.Module:
    """Rebuild the quantized model from :func:`save_quantized`'s files.

    ``model`` gives the architecture (its weights are overwritten); when omitted the manifest's
    model-zoo name is used. Batch norms folded at quantization time are replaced by Identity.
    """
    out = Path(out_dir)
    mpath = out / "manifest.json"
    if not mpath.exists():
        raise FileNotFoundError(f"{mpath} not found: is {out} an exported quantized model?")
    try:
        manifest = json.loads(mpath.read_text())
        if not isinstance(manifest, dict):
            raise ValueError(f"a JSON {type(manifest).__name__}, not an object")
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{mpath} is not a readable export manifest ({e}); re-export the model") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise ValueError(f"{out}: unsupported export format {manifest.get('format')!r} v{manifest.get('version')}")
    if model is None:
        if not manifest.get("model"):
            raise ValueError("the manifest names no model-zoo model; pass the architecture as model=")
        from ..zoo import load_model
        model = load_model(manifest["model"]).model
    from .graph import _set_module
    mods = dict(model.named_modules())
    for name in manifest.get("folded_bn", []):
        if not isinstance(mods.get(name), nn.modules.batchnorm._BatchNorm):
            raise ValueError(f"{mpath}: folded_bn names {name!r}, which is not a batch norm of the model "
                             f"({type(mods.get(name)).__name__ if name in mods else 'no such module'})")
        _set_module(model, name, nn.Identity())
    tpath = out / "model.safetensors"
    try:
        tensors = load_file(str(tpath))
    except Exception as e:  # safetensors raises its own error types for truncated or corrupt files
        raise ValueError(f"{tpath} is not a readable safetensors file ({first_line(e)}); re-export the model") from None
    state = {k[len("float."):]: v for k, v in tensors.items() if k.startswith("float.")}
    layers = manifest.get("layers")
    if not isinstance(layers, dict):
        raise ValueError(f"{mpath}: 'layers' must map layer names to their shape and limits")
    for name, meta in layers.items():
        qs = LayerQState.from_tensors(tensors, f"q.{name}")
        if not isinstance(meta, dict) or [meta.get("qmin"), meta.get("qmax")] != [qs.qmin, qs.qmax] \
                or list(meta.get("shape", [])) != list(qs.q.shape) or meta.get("group_size", 0) != qs.group_size:
            raise ValueError(f"{mpath}: layer {name}'s manifest entry {meta!r} does not match its tensors "
                             f"(shape {list(qs.q.shape)}, limits [{qs.qmin}, {qs.qmax}]); re-export the model")
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"{mpath} names layer {name!r}, which the model does not have") from None
        if tuple(module.weight.shape) != tuple(qs.q.shape):
            raise ValueError(f"{mpath}: layer {name} has weights {tuple(qs.q.shape)}, the model's "
                             f"{tuple(module.weight.shape)}")
        state[f"{name}.weight"] = qs.weight(module.weight.dtype)
    missing = set(model.state_dict()) - set(state)
    if missing:
        raise ValueError(f"the export does not match the architecture: missing {sorted(missing)[:5]}")
    # parameters that fold_batchnorm created (a bias on a bias-free conv) must exist before loading
    for key in state:
        mod_name, _, pname = key.rpartition(".")
        mod = model.get_submodule(mod_name) if mod_name else model
        if getattr(mod, pname, None) is None and pname == "bias":
            mod.bias = nn.Parameter(torch.zeros_like(state[key]))
    model.load_state_dict(state, strict=True)
    return model.eval()
