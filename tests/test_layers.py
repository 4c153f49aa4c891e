"""Imports point down the layers: every import between the library's packages (top-level
modules count as packages) goes to a package of a lower layer, read from the source with
``ast`` so that imports inside functions count too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "eqbg"

#: The library's layers, lowest first; a package imports only from packages of lower layers.
LAYERS: tuple[frozenset[str], ...] = tuple(
    frozenset(layer.split())
    for layer in (
        "io settings geometry plugins",  # files, settings, CoM-free geometry; plugin imports
        "nn systems",  # networks; targets
        "flows",  # the Flow protocol, priors, solvers, models
        "ot rundir",  # couplings; a run's directory and its flow
        "sampling data",  # sampling runs; reference data
        "losses scale",  # objectives; the CPU smoke switch
        "pipeline training",  # the config's grid of runs; the training loop
        "evaluation",  # metrics of one run
        "baselines tables plots",  # budget-matched MCMC; tables and figures of a pipeline run
        "claims config",  # the papers' findings; the config's generated schema and checks
    )
)

def _package(module: str) -> str:
    """``eqbg.flows.cnf`` -> ``flows``; ``eqbg.io`` -> ``io``."""
    return module.split(".")[1]


def _source_module(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """The ``eqbg.*`` modules a file imports, each with whether it is a type-checking import."""
    tree = ast.parse(path.read_text())
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only.update(id(child) for child in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [(name, id(node) in type_only) for name in names if name.startswith("eqbg.")]
    return found


def _edges() -> set[tuple[str, str, bool, str]]:
    """``(importing package, imported package, type-only, importing module)`` across packages."""
    edges = set()
    for path in SRC.rglob("*.py"):
        module = _source_module(path)
        if module == "eqbg":
            continue
        for name, type_only in _imports(path):
            if _package(name) != _package(module):
                edges.add((_package(module), _package(name), type_only, module))
    return edges


def _layer(package: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if package in layer)


def test_every_package_has_a_layer():
    packages = {
        path.stem if path.is_file() else path.name
        for path in SRC.iterdir()
        if (path.suffix == ".py" and path.stem != "__init__") or (path / "__init__.py").exists()
    }
    assert packages == set().union(*LAYERS)


def test_imports_point_down_the_layers():
    upward = sorted(
        f"{module} imports eqbg.{target} ({src} is layer {_layer(src)}, {target} {_layer(target)})"
        for src, target, type_only, module in _edges()
        if _layer(target) >= _layer(src)
    )
    assert upward == []


@pytest.mark.parametrize("source", ["import eqbg.tables", "from eqbg.claims import table"])
def test_an_upward_import_is_found(tmp_path, source):
    """The check reads what it claims to: an evaluation module importing tables or claims."""
    path = tmp_path / "probe.py"
    path.write_text(f"def f():\n    {source}\n")
    (name, type_only), = _imports(path)
    assert _layer(_package(name)) > _layer("evaluation") and not type_only
