"""The hand-designed reference networks (search_spaces/reference/*.json), by name."""
from __future__ import annotations

import functools
from pathlib import Path

from nas.space.space_file import SPACES_DIR
from nas.space.spec import Candidate

REFERENCE_DIR = SPACES_DIR / "reference"


@functools.cache
def all_references() -> dict[str, Candidate]:
    """Short label (R1, R2, R4) -> candidate, in file order."""
    refs = {}
    for path in sorted(REFERENCE_DIR.glob("*.json")):
        candidate = Candidate.from_json(path.read_text(), str(path))
        refs[label(candidate, path)] = candidate
    return refs


def label(candidate: Candidate, path: Path) -> str:
    return candidate.name.split()[0] if candidate.name else path.stem


def by_name(name: str) -> Candidate:
    refs = all_references()
    for key, candidate in refs.items():
        if name.lower() in (key.lower(), candidate.name.lower()):
            return candidate
    raise KeyError(f"unknown reference model {name!r}; known: {', '.join(refs)}")
