"""The run directory: configuration, one checkpoint per finished layer (written atomically)."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from safetensors.torch import load_file, save_file

from .config import QuantConfig, config_differences
from .qstate import LayerQState
from .report import LayerReport


class RunDirectory:
    """``run_dir/config.json`` and ``run_dir/layers/NNN_<name>.{safetensors,json}``."""

    def __init__(self, path: str | os.PathLike, config: QuantConfig, model_signature: dict) -> None:
        self.path = Path(path)
        self.layers = self.path / "layers"
        cfg_path = self.path / "config.json"
        current = {"config": config.to_dict(), "model": model_signature}
        if cfg_path.exists():
            old = json.loads(cfg_path.read_text())
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

    def load(self, index: int, name: str) -> tuple[LayerQState, LayerReport] | None:
        stem = self._stem(index, name)
        meta, tens = stem.with_suffix(".json"), stem.with_suffix(".safetensors")
        if not (meta.exists() and tens.exists()):
            return None
        try:
            report = LayerReport(**{**json.loads(meta.read_text()), "resumed": True})
            loss = report.loss
            if isinstance(loss, bool) or not isinstance(loss, (int, float)) or not math.isfinite(loss) or loss < 0:
                raise ValueError(f"its loss {loss!r} is not a finite number >= 0")
            return LayerQState.from_tensors(load_file(str(tens)), "layer"), report
        except Exception as e:  # corrupt JSON or safetensors, unknown fields, invalid values
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"checkpoint of layer {name} ({stem}.json/.safetensors) is invalid: {first[:200]}; "
                             "delete both files to redo the layer") from None

    def save(self, index: int, name: str, qs: LayerQState, report: LayerReport) -> None:
        stem = self._stem(index, name)
        tmp = stem.with_suffix(".safetensors.tmp")
        save_file(qs.tensors("layer"), str(tmp))
        os.replace(tmp, stem.with_suffix(".safetensors"))
        # the JSON is written last: a layer counts as finished only when both files exist
        from dataclasses import asdict
        _atomic_write_text(stem.with_suffix(".json"), json.dumps(asdict(report), default=str))


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
