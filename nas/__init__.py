"""tinynas: the best small CNN for a parameter budget. `nas.search(...)` runs a search from Python; the command line
(`tinynas`, or `python search.py`) calls the same function. Names load on first use, so that `import nas` is quick
and a bad command-line flag fails before torch loads."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# public name -> the module that defines it
_HOMES = {
    "search": "nas.api", "SearchResult": "nas.api", "load": "nas.api", "describe": "nas.api", "evaluate": "nas.api",
    "Evaluation": "nas.api",
    "UserError": "nas.errors", "SearchError": "nas.errors", "SearchFailed": "nas.errors",
    "StorageError": "nas.errors", "DataError": "nas.data.sources", "SpaceError": "nas.space.space_file",
    "SpecError": "nas.space.spec", "WeightsError": "nas.deploy.export", "Interrupted": "nas.engine.interrupts",
}
__all__ = list(_HOMES)

if TYPE_CHECKING:
    from nas.api import Evaluation, SearchResult, describe, evaluate, load, search  # noqa: F401
    from nas.errors import SearchError, SearchFailed, StorageError, UserError  # noqa: F401
    from nas.deploy.export import WeightsError  # noqa: F401
    from nas.engine.interrupts import Interrupted  # noqa: F401
    from nas.data.sources import DataError  # noqa: F401
    from nas.space.space_file import SpaceError  # noqa: F401
    from nas.space.spec import SpecError  # noqa: F401


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'nas' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
