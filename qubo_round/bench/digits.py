"""Suites of real layer problems from the embedded digits model.

Every supported layer (conv1, conv2, conv3 groups, fc1, fc2) at each bit width, covariance form,
per-channel symmetric MSE grid, ``options.samples`` calibration inputs drawn with
``options.calib_seed``. Layers with more than ``options.max_rows`` rows keep a seeded random
subset of rows (:meth:`LayerQUBO.select_rows`; the same rows at every bit width).

Problems are built once and cached as ``.npz`` under ``options.cache_dir`` with a JSON manifest,
in a folder named by a hash of the build settings and of the model weights file, so workers and
later runs load them without the model.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import zlib
from importlib import resources
from pathlib import Path

import numpy as np

from .suites import Instance, SuiteOptions, describe_problem, register_suite

log = logging.getLogger(__name__)

#: Most free variables per row for which the exact optimum is cheap (``digits-small``).
EXACT_LIMIT = 24
#: Bump when the way problems are built changes (invalidates caches).
BUILD_VERSION = 2


def _model_fingerprint() -> str:
    try:
        data = resources.files("qubo_round.models").joinpath("digits_cnn.pt").read_bytes()
    except (FileNotFoundError, ModuleNotFoundError):  # pragma: no cover - packaging problem
        return "unknown"
    return hashlib.sha1(data).hexdigest()[:12]


def cache_folder(options: SuiteOptions) -> Path:
    """The cache folder of the digits problems built with ``options``."""
    settings = {"version": BUILD_VERSION, "model": "digits", "weights": _model_fingerprint(),
                "form": "covariance", "grid": "channel/symmetric/mse", **options.content_key()}
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return Path(options.cache_dir).resolve() / f"digits-{digest}"


def _select(problem, layer: str, group: int, options: SuiteOptions):
    """Seeded subset of ``max_rows`` rows (sorted), or the problem itself when small enough."""
    if problem.rows <= options.max_rows:
        return problem
    rng = np.random.default_rng([options.row_seed, zlib.crc32(f"{layer}/{group}".encode())])
    rows = np.sort(rng.choice(problem.rows, size=options.max_rows, replace=False))
    return problem.select_rows(rows)


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


class _Builder:
    """Loads the model and calibration batch on first use only (cached problems need neither)."""

    def __init__(self, options: SuiteOptions) -> None:
        self.options = options
        self._bundle = None
        self._data = None

    @property
    def model(self):
        if self._bundle is None:
            from qubo_round.zoo import load_model
            self._bundle = load_model("digits")
            self._data = self._bundle.calibration(self.options.samples, self.options.calib_seed)
        return self._bundle.model

    def layers(self, folder: Path) -> list[dict]:
        """``[{"layer", "cols"}]`` of every supported layer (cached in ``layers.json``)."""
        path = folder / "layers.json"
        if path.is_file():
            return json.loads(path.read_text())
        from qubo_round.layers import get_layer, supported_layers
        table = [{"layer": name, "cols": get_layer(self.model, name).cols} for name in supported_layers(self.model)]
        _write_json(path, table)
        return table

    def build(self, layer: str, bits: int, folder: Path) -> list[dict]:
        """Build, save and describe the problems of ``layer`` at ``bits``; manifest entries."""
        from qubo_round.extract import layer_problems
        from qubo_round.grid import Grid
        from qubo_round.io import save_problem

        log.info("building the digits %s problem(s) at %d bits into %s", layer, bits, folder)
        model = self.model  # loads the model and the calibration batch
        problems = layer_problems(model, layer, self._data, Grid(bits=bits), form="covariance")
        entries = []
        for g, p in enumerate(problems):
            full_rows = p.rows
            p = _select(p, layer, g, self.options)
            p.meta.update(source="digits", set="digits")
            name = f"{layer}-b{bits}" if len(problems) == 1 else f"{layer}-g{g}-b{bits}"
            path = save_problem(p, folder / f"{name}.npz")
            entries.append({"name": name, "file": path.name, "layer_rows": full_rows,
                            "descriptors": describe_problem(p, group=g, bits=bits)})
        return entries


def digits_instances(suite: str, options: SuiteOptions, max_cols: int | None = None) -> list[Instance]:
    """The digits layer instances at ``options.bits`` (built on first use, then cached);
    ``max_cols`` skips layers with more columns (they cannot have fewer free variables)."""
    folder = cache_folder(options)
    folder.mkdir(parents=True, exist_ok=True)
    builder = _Builder(options)
    out: list[Instance] = []
    for bits in options.bits:
        for info in builder.layers(folder):
            if max_cols is not None and info["cols"] > max_cols:
                continue
            manifest = folder / f"manifest-{info['layer']}-b{bits}.json"
            if manifest.is_file():
                entries = json.loads(manifest.read_text())
            else:
                entries = builder.build(info["layer"], bits, folder)
                _write_json(manifest, entries)
            out += [Instance(suite=suite, name=e["name"], spec=str(folder / e["file"]),
                             descriptors=dict(e["descriptors"])) for e in entries]
    return out


@register_suite("digits-layers")
def digits_layers(options: SuiteOptions) -> list[Instance]:
    """Every supported layer of the digits model at each bit width (rows subsampled)."""
    return digits_instances("digits-layers", options)


@register_suite("digits-small")
def digits_small(options: SuiteOptions) -> list[Instance]:
    """The digits layer problems whose rows all have <= 24 free variables (exact optimum known)."""
    return [i for i in digits_instances("digits-small", options, max_cols=EXACT_LIMIT)
            if i.descriptors["max_free"] <= EXACT_LIMIT]
