"""Imports run one way (docs/architecture.md): core <- solvers <- relaxations <- pipeline <- bench/studies <- CLIs."""
import ast
import importlib
import pkgutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Installed package -> source folder (pyproject's package-dir).
PACKAGES = {"qubo_round": ROOT / "qubo_round", "qubo_round.solvers": ROOT / "solvers",
            "qubo_round.relaxations": ROOT / "relaxations", "qubo_round.studies": ROOT / "studies"}
#: The one import against the direction still there, with its reason (docs/architecture.md).
#: (module, package) imports against the direction that are allowed: none left (lower_bound's
#: proofs, enumeration and branch and bound, are core kernels now).
KNOWN_UPWARD: dict[tuple[str, str], str] = {}


def layer(module: str) -> int:
    """0 core, 1 solvers, 2 relaxations, 3 pipeline, 4 bench and studies, 5 command lines."""
    if module == "qubo_round.cli" or module.endswith(".cli"):
        return 5
    for prefix, n in (("qubo_round.solvers", 1), ("qubo_round.relaxations", 2), ("qubo_round.pipeline", 3),
                      ("qubo_round.bench", 4), ("qubo_round.studies", 4)):
        if module == prefix or module.startswith(prefix + "."):
            return n
    return 0


def _modules() -> dict[str, Path]:
    out = {}
    for pkg, folder in PACKAGES.items():
        for f in folder.rglob("*.py"):
            inner = [p for p in PACKAGES.values() if p != folder and folder in p.parents and p in f.parents]
            if inner:
                continue  # belongs to the nested package
            parts = list(f.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([pkg, *parts])] = f
    return out


def _imports(module: str, path: Path) -> set[str]:
    """Project modules imported anywhere in ``module`` (top level and inside functions)."""
    base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                head = base[: len(base) - (node.level - 1)]
                found.add(".".join(head + ([node.module] if node.module else [])))
            else:
                found.add(node.module)
    return {m for m in found if m and (m == "qubo_round" or m.startswith("qubo_round."))}


def test_layer_of_module_names():
    assert [layer(m) for m in ("qubo_round.bounds", "qubo_round.solvers.its", "qubo_round.relaxations.ste",
                               "qubo_round.pipeline.run", "qubo_round.bench.sweep", "qubo_round.studies.data",
                               "qubo_round.pipeline.cli", "qubo_round.cli")] == [0, 1, 2, 3, 4, 4, 5, 5]


def test_imports_run_one_way():
    modules = _modules()
    assert len(modules) > 60 and "qubo_round.solvers.its" in modules and "qubo_round.pipeline.data_form" in modules
    upward = sorted((m, t) for m, path in modules.items() for t in _imports(m, path)
                    if layer(t) > layer(m) and (m, _package_of(t)) not in KNOWN_UPWARD)
    assert upward == [], f"imports against the direction core <- solvers <- relaxations <- pipeline <- bench: {upward}"


def _package_of(module: str) -> str:
    return "qubo_round.solvers" if module.startswith("qubo_round.solvers") else module


def test_solvers_package_imports_no_solver_and_no_torch():
    code = ("import sys, qubo_round.solvers as s; s.available_solvers(); "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith('qubo_round.relaxations') "
            "or m in ('qubo_round.solvers.its', 'qubo_round.solvers.anneal')]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_builtin_table_registers_every_name():
    from qubo_round.solvers import available_solvers, solver_class
    from qubo_round.solvers.registry import BUILTIN
    assert available_solvers()[: len(BUILTIN)] == list(BUILTIN)
    for name, module in BUILTIN.items():
        assert solver_class(name).__module__ == module


def _installed_modules() -> list[str]:
    names = set()
    for pkg in PACKAGES:
        mod = importlib.import_module(pkg)
        names.add(pkg)
        names.update(m.name for m in pkgutil.walk_packages(mod.__path__, pkg + "."))
    return sorted(names)


def test_every_module_imports_on_its_own():
    """Each module in a fresh interpreter: no import order holds the package together."""
    names = _installed_modules()
    assert len(names) > 60

    def run(name):
        r = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True)
        return name, r.returncode, (r.stderr.strip().splitlines() or [""])[-1]

    with ThreadPoolExecutor(max_workers=2) as ex:
        failed = [(n, err) for n, rc, err in ex.map(run, names) if rc]
    assert failed == []


@pytest.mark.parametrize("spec", ["adaround/fast", "its", "dimod:TabuSampler"])
def test_lazy_lookup_in_a_fresh_interpreter(spec):
    code = f"from qubo_round.solvers import get_solver; print(type(get_solver({spec!r})).__name__)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
