"""The package's shape: no import cycle in nas/, and the model code knows nothing of Optuna."""
import ast
import graphlib

from tests.conftest import ROOT

PACKAGE = ROOT / "nas"


def _imports() -> dict[str, set[str]]:
    """Module name -> the nas modules and top-level packages it imports."""
    graph = {}
    for path in PACKAGE.glob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
                if node.module == "nas":
                    names |= {f"nas.{alias.name}" for alias in node.names}
        graph[f"nas.{path.stem}"] = names
    return graph


def test_no_import_cycle_in_the_package():
    graph = _imports()
    internal = {name: {m for m in deps if m in graph and m != name} for name, deps in graph.items()}
    graphlib.TopologicalSorter(internal).prepare()  # raises CycleError naming the cycle


def test_building_counting_and_training_never_import_optuna():
    graph = _imports()
    for name in ("nas.spec", "nas.blocks", "nas.build", "nas.budget", "nas.train", "nas.data"):
        if name in graph:
            assert not any(m.split(".")[0] == "optuna" for m in graph[name]), name


def test_library_code_never_exits_the_process():
    """Only a --jobs worker process's own entry ends its process; everything else raises, and the command line
    turns errors into exit codes (nas.cli.main returns them)."""
    exits = {}
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and any(
                    isinstance(n, ast.Attribute) and n.attr == "exit" and getattr(n.value, "id", "") == "sys"
                    for n in ast.walk(node)):
                exits.setdefault(path.stem, set()).add(node.name)
    assert exits == {"workers": {"_worker_entry"}}
