"""The run directory: configuration, one checkpoint per finished layer (written atomically)."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from safetensors.torch import load_file, save_file

from ..errors import first_line
from .config import QuantConfig, config_differences
from .qstate import LayerQState
from .report import LayerReport


class RunDirectory:
    """``run_dir/config.json`` and ``run_dir/layers/NNN_<name>.{safetensors,json}``."""

    def __init__(self, path: str | os.PathLike, config: QuantConfig, model_signature: dict) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"run directory {self.path} is a file; give a folder path for --run-dir")
        self.layers = self.path / "layers"
        cfg_path = self.path / "config.json"
        current = {"config": config.to_dict(), "model": model_signature}
        if cfg_path.exists():
            try:
                old = json.loads(cfg_path.read_text())
                if not isinstance(old, dict):
                    raise ValueError(f"a JSON {type(old).__name__}, not an object")
            except (ValueError, UnicodeDecodeError) as e:
                raise ValueError(f"run directory config {cfg_path} is not a readable run configuration ({e}); "
                                 "use another --run-dir, or delete this one to start over") from None
            diffs = config_differences(old.get("config", {}), current["config"])
            diffs += config_differences(old.get("model", {}), current["model"])
            if diffs:
                raise ValueError(f"run directory {self.path} holds a run with a different configuration; "
                                 "refusing to resume. Differences:\n  " + "\n  ".join(diffs) +
                                 "\nUse another --run-dir, or delete this one to start over.")
        else:
            self.layers.mkdir(parents=True, exist_ok=True)
            _atomic_write_text(cfg_path, json.dumps(current, indent=2, default=str))
        self.layers.mkdir(parents=True, exist_ok=True)

    def _stem(self, index: int, name: str) -> Path:
        return self.layers / f"{index:03d}_{name.replace('/', '_')}"

    def finished(self, index: int, name: str) -> bool:
        """Whether the layer has a checkpoint (both files; :meth:`load` validates it)."""
        stem = self._stem(index, name)
        return stem.with_suffix(".json").exists() and stem.with_suffix(".safetensors").exists()

    def load(self, index: int, name: str, limits: tuple[int, int], shape: tuple[int, ...]
             ) -> tuple[LayerQState, LayerReport] | None:
        """The finished layer's state and report, validated against this run: the layer's grid
        ``limits`` and weight ``shape``, the report's name, index and numbers; None when the
        layer has no checkpoint yet."""
        stem = self._stem(index, name)
        meta, tens = stem.with_suffix(".json"), stem.with_suffix(".safetensors")
        if not self.finished(index, name):
            return None
        try:
            report = LayerReport(**{**json.loads(meta.read_text()), "resumed": True})
            _check_report(report, index, name)
            qs = LayerQState.from_tensors(load_file(str(tens)), "layer")
            if (qs.qmin, qs.qmax) != tuple(limits):
                raise ValueError(f"its grid limits ({qs.qmin}, {qs.qmax}) are not this run's {tuple(limits)}")
            if tuple(qs.q.shape) != tuple(shape):
                raise ValueError(f"its weights have shape {tuple(qs.q.shape)}, the layer's {tuple(shape)}")
            return qs, report
        except Exception as e:  # corrupt JSON or safetensors, unknown fields, invalid values
            raise ValueError(f"checkpoint of layer {name} ({stem}.json/.safetensors) is invalid: {first_line(e)}; "
                             "delete both files to redo the layer") from None

    def save(self, index: int, name: str, qs: LayerQState, report: LayerReport) -> None:
        stem = self._stem(index, name)
        tmp = stem.with_suffix(".safetensors.tmp")
        save_file(qs.tensors("layer"), str(tmp))
        os.replace(tmp, stem.with_suffix(".safetensors"))
        # the JSON is written last: a layer counts as finished only when both files exist
        from dataclasses import asdict
        _atomic_write_text(stem.with_suffix(".json"), json.dumps(asdict(report), default=str))


def _check_report(r: LayerReport, index: int, name: str) -> None:
    """The numbers a resumed layer reports: its own name and index, finite losses >= 0."""
    if r.name != name or r.index != index:
        raise ValueError(f"it is the report of layer {r.name!r} (index {r.index}), not {name!r} ({index})")
    optional = ("solver_loss", "holdout_nearest_loss", "holdout_loss")  # None: not measured
    for field in ("nearest_loss", "loss", "seconds") + optional:
        v = getattr(r, field)
        if v is None and field in optional:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"its {field} {v!r} is not a finite number >= 0")
    if not 0 <= r.changed_fraction <= 1:
        raise ValueError(f"its changed_fraction {r.changed_fraction!r} is not in [0, 1]")


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
