"""The package's shape: subpackages in layers, imports only going down, no import cycle, and the model code knows
nothing of Optuna."""
import ast
import graphlib

from tests.conftest import ROOT

PACKAGE = ROOT / "nas"


# each room of the house and its floor: a module imports only from its own floor or below
FLOORS = {"config": 0, "errors": 0, "fileio": 0, "logs": 0, "space": 1, "data": 2, "deploy": 3, "engine": 4,
          "results": 5, "run": 6, "commands": 6, "network_card": 6, "api": 7, "cli": 8, "__init__": 9}


def _module_name(path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Module name -> the nas modules and top-level packages it imports."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
                if node.module.startswith("nas"):
                    names |= {f"{node.module}.{alias.name}" for alias in node.names}
        graph[_module_name(path)] = names
    return graph


def _floor(module: str) -> int:
    parts = module.split(".")
    return FLOORS["__init__"] if len(parts) == 1 else FLOORS[parts[1]]


def test_no_import_cycle_in_the_package():
    graph = _imports()
    internal = {name: {m for m in deps if m in graph and m != name and not name.startswith(m + ".")}
                for name, deps in graph.items()}
    graphlib.TopologicalSorter(internal).prepare()  # raises CycleError naming the cycle


def test_every_module_sits_in_a_room_and_imports_only_go_down():
    graph = _imports()
    assert all(len(name.split(".")) == 1 or name.split(".")[1] in FLOORS for name in graph), sorted(graph)
    upward = sorted((name, m) for name, deps in graph.items() for m in deps
                    if m in graph and m != "nas" and _floor(m) > _floor(name))
    assert upward == []


def test_building_counting_and_training_never_import_optuna():
    graph = _imports()
    for name in ("nas.space.spec", "nas.space.blocks", "nas.space.build", "nas.space.budget", "nas.engine.train", "nas.data"):
        if name in graph:
            assert not any(m.split(".")[0] == "optuna" for m in graph[name]), name


def test_library_code_never_exits_the_process():
    """Only a --jobs worker process's own entry ends its process; everything else raises, and the command line
    turns errors into exit codes (nas.cli.main returns them)."""
    exits = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and any(
                    isinstance(n, ast.Attribute) and n.attr == "exit" and getattr(n.value, "id", "") == "sys"
                    for n in ast.walk(node)):
                exits.setdefault(path.stem, set()).add(node.name)
    assert exits == {"workers": {"_worker_entry"}}
