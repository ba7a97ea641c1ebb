"""The library's layers, read from the source (every import statement, those inside functions too):

- no step module (``fiberflow.steps``) imports another: shared numerics live in
  ``fiberflow.linalg``, shared physics in ``fiberflow.models``;
- the simulator (``fiberflow.sim``), with everything it imports, stays within sim, io, models,
  the numba kernels and the base modules: it never reaches reduction code;
- models and linalg import no step, no command, no workflow code.
"""

import ast
import os

import pytest

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
BASE = {"fiberflow", "fiberflow.paths", "fiberflow.errors", "fiberflow.bitmasks", "fiberflow.config",
        "fiberflow.instrument", "fiberflow.provenance", "fiberflow.reference", "fiberflow.linalg", "fiberflow.yamlio"}


def _modules():
    out = {}
    for dirpath, _dirs, files in os.walk(os.path.join(SRC, "fiberflow")):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                parts = os.path.relpath(path, SRC)[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                out[".".join(parts)] = path
    return out


MODULES = _modules()


def imports(name):
    """fiberflow modules that module ``name`` imports (absolute names)."""
    path = MODULES[name]
    pkg = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("fiberflow")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("fiberflow"):
                continue
            for a in node.names:  # `from . import paths` imports the module fiberflow.paths
                found.add(f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod)
    return found


def closure(names):
    seen, todo = set(), list(names)
    while todo:
        m = todo.pop()
        if m in seen or m not in MODULES:
            continue
        seen.add(m)
        todo += imports(m)
    return seen


def test_the_import_reader_sees_relative_and_local_imports():
    """The checks below are only as good as this reader: known imports of known modules."""
    assert {"fiberflow.linalg", "fiberflow.models.resolution", "fiberflow.bitmasks"} <= imports("fiberflow.steps.sky")
    assert "fiberflow.steps.preproc" in imports("fiberflow.qa.metrics")  # an import inside a function
    assert "fiberflow.workflow.plan" in imports("fiberflow.cli.ops")
    assert len([m for m in MODULES if m.startswith("fiberflow.steps.")]) >= 11


@pytest.mark.parametrize("step", sorted(m for m in MODULES if m.startswith("fiberflow.steps.")))
def test_no_step_imports_another_step(step):
    other = sorted(m for m in imports(step) if m.startswith("fiberflow.steps") and m != step)
    assert not other, f"{step} imports {other}: move what they share to fiberflow.linalg or fiberflow.models"


def test_the_simulator_reaches_no_reduction_code():
    allowed = ("fiberflow.sim", "fiberflow.io", "fiberflow.models", "fiberflow._kernels")
    reached = closure(m for m in MODULES if m.startswith("fiberflow.sim"))
    bad = sorted(m for m in reached if m not in BASE and not m.startswith(allowed))
    assert not bad, f"the simulator reaches {bad}"


@pytest.mark.parametrize("layer", ["fiberflow.models", "fiberflow.linalg", "fiberflow.io"])
def test_shared_layers_import_no_step_command_or_workflow(layer):
    reached = closure(m for m in MODULES if m == layer or m.startswith(layer + "."))
    bad = sorted(m for m in reached if m.startswith(("fiberflow.steps", "fiberflow.cli", "fiberflow.workflow",
                                                     "fiberflow.qa", "fiberflow.sim", "fiberflow.validation")))
    assert not bad, f"{layer} reaches {bad}"
