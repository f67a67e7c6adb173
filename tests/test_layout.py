"""pipeline/ in floors: each subpackage imports only those below it, as its __init__ says; spark/ stands alone."""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = ROOT / "pipeline"
FLOORS = ["tasks", "reports", "orchestration", "runners", "stores", "configs", "rules"]  # top to bottom


def imported(source: str, module: str, package: bool = False) -> Iterator[Tuple[int, str]]:
    """(line, dotted name) of every import in `source`, relative ones resolved against `module` (e.g.
    'pipeline.stores.leases'; `package`: it is a package's __init__), function-local ones included."""
    package = module if package else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            yield node.lineno, name
            if not node.module:  # from . import a, b: each is a module of the package
                for alias in node.names:
                    yield node.lineno, f"{name}.{alias.name}"


def upward_imports(source: str, module: str, package: bool = False) -> List[str]:
    """The imports of a pipeline module that reach a floor above its own."""
    floor = module.split(".")[1]
    found = []
    for line, name in imported(source, module, package):
        parts = name.split(".")
        if parts[0] == "pipeline" and len(parts) > 1 and parts[1] in FLOORS:
            if FLOORS.index(parts[1]) < FLOORS.index(floor):
                found.append(f"{module}:{line} imports {name}")
    return sorted(found)


def modules() -> Iterator[Tuple[str, Path]]:
    """(dotted name, path) of every module of pipeline/, a package's __init__ named as the package."""
    for path in sorted(PIPELINE.rglob("*.py")):
        dotted = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        yield dotted.removesuffix(".__init__"), path


def test_the_checker_sees_an_upward_import_whatever_its_form():
    source = "from pipeline.tasks.populate import RunBatch\nfrom ..reports import summary\nimport pipeline.runners\n"
    assert upward_imports(source, "pipeline.stores.leases") == [
        "pipeline.stores.leases:1 imports pipeline.tasks.populate",
        "pipeline.stores.leases:2 imports pipeline.reports",
        "pipeline.stores.leases:3 imports pipeline.runners"]
    assert upward_imports("from ..rules.errors import PipelineError\nfrom . import markers\n",
                          "pipeline.stores.leases") == []
    assert upward_imports("from . import summary\n", "pipeline.reports", package=True) == []
    assert upward_imports("from .. import rules\n", "pipeline.reports", package=True) == []
    assert upward_imports("from ..tasks import populate\n", "pipeline.reports", package=True) == [
        "pipeline.reports:1 imports pipeline.tasks"]


def test_every_module_lives_in_a_floor():
    loose = [name for name, path in modules() if name != "pipeline" and name.split(".")[1] not in FLOORS]
    assert loose == []
    assert sorted(p.name for p in PIPELINE.iterdir() if p.is_dir() and (p / "__init__.py").exists()) == sorted(FLOORS)


def test_no_floor_imports_one_above_it():
    found = [problem for name, path in modules() if name != "pipeline"
             for problem in upward_imports(path.read_text(), name, path.name == "__init__.py")]
    assert found == []


@pytest.mark.parametrize("floor", FLOORS)
def test_each_floor_says_what_it_holds_and_what_it_may_import(floor):
    doc = ast.get_docstring(ast.parse((PIPELINE / floor / "__init__.py").read_text())) or ""
    said = re.search(r"May import: (.*)\.\s*$", doc, re.S)
    assert said and len(doc) > len(said.group(0)) + 40, doc  # what it holds, then what it may import
    below = FLOORS[FLOORS.index(floor) + 1:]
    named = [w for w in re.findall(r"[a-z]+", said.group(1)) if w in FLOORS]
    assert named == below, f"{floor} says it may import {named}, the floors below it are {below}"


def test_spark_imports_neither_pipeline_nor_luigi():
    found = [f"{path.name}:{line} imports {name}" for path in sorted((ROOT / "spark").glob("*.py"))
             for line, name in imported(path.read_text(), f"spark.{path.stem}")
             if name.split(".")[0] in ("pipeline", "luigi")]
    assert found == []
