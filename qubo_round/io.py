"""Save and load problems as single ``.npz`` files (no pickles), so solver benchmarks can run on
dumped real-layer problems without the model."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from .grid import RoundingSpace
from .problem import DenseQUBO, LayerQUBO, QUBOFamily

FORMAT_VERSION = 1
_SPACE_FIELDS = ("W", "s", "z", "L", "fixed_mask", "fixed_value")


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"meta value of type {type(o).__name__} is not JSON-serialisable")


def save_problem(problem: QUBOFamily, path: str | Path) -> Path:
    """Write ``problem`` to ``path`` (``.npz`` appended if missing); returns the path."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(path.suffix + ".npz")
    if not isinstance(problem, (LayerQUBO, DenseQUBO)):
        raise TypeError(f"cannot save a {type(problem).__name__}; expected LayerQUBO or DenseQUBO")
    arrays: dict[str, np.ndarray] = {
        "fixed_mask": problem.fixed_mask, "fixed_value": problem.fixed_value, "offset": problem.offset}
    if isinstance(problem, LayerQUBO):
        kind = "layer"
        arrays.update(A=problem.A, scale=problem.scale, linear=problem.linear)
    elif isinstance(problem, DenseQUBO):
        kind = "dense"
        arrays["Q"] = problem.Q
    header = {"format": "qubo-round-problem", "version": FORMAT_VERSION, "kind": kind,
              "meta": problem.meta, "space": None}
    if problem.space is not None:
        sp = problem.space
        header["space"] = {"qmin": sp.qmin, "qmax": sp.qmax, "group_size": int(sp.group_size)}
        arrays.update({f"space_{f}": getattr(sp, f) for f in _SPACE_FIELDS})
    arrays["header"] = np.array(json.dumps(header, default=_json_default))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


def load_problem(path: str | Path) -> QUBOFamily:
    """Read a problem written by :func:`save_problem`."""
    path = Path(path)
    if not path.exists() and path.suffix != ".npz" and path.with_suffix(path.suffix + ".npz").exists():
        path = path.with_suffix(path.suffix + ".npz")
    if not path.exists():
        raise FileNotFoundError(f"problem file {path} does not exist")
    try:
        return _read_problem(path)
    except (KeyError, zipfile.BadZipFile, EOFError, OSError, json.JSONDecodeError, TypeError) as e:
        what = f"missing entry {e}" if isinstance(e, KeyError) else f"{type(e).__name__}: {e}"
        raise ValueError(f"{path} is not a readable qubo-round problem file ({what}); rewrite it with "
                         f"save_problem or 'qubo-round problem --dump'") from None


def _read_problem(path: Path) -> QUBOFamily:
    with np.load(path, allow_pickle=False) as z:
        if "header" not in z:
            raise ValueError(f"{path} is not a qubo-round problem file (no header)")
        header = json.loads(str(z["header"]))
        if header.get("format") != "qubo-round-problem" or header.get("version") != FORMAT_VERSION:
            raise ValueError(f"{path}: unsupported problem format {header.get('format')!r} "
                             f"version {header.get('version')!r}")
        space = None
        if header["space"] is not None:
            try:  # files written before group-wise grids have no group_size: one scale per row
                space = RoundingSpace(**{f: z[f"space_{f}"] for f in _SPACE_FIELDS},
                                      qmin=header["space"]["qmin"], qmax=header["space"]["qmax"],
                                      group_size=header["space"].get("group_size", 0))
            except ValueError as e:
                raise ValueError(f"{path}: {e}") from None
        common = dict(offset=z["offset"], fixed_mask=z["fixed_mask"], fixed_value=z["fixed_value"],
                      space=space, meta=header["meta"])
        try:
            if header["kind"] == "layer":
                return LayerQUBO(A=z["A"], scale=z["scale"], linear=z["linear"], **common)
            return DenseQUBO(Q=z["Q"], **common)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
