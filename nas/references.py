"""The hand-designed reference networks (search_spaces/reference/*.json): warm starts and baselines."""
from __future__ import annotations

import functools
from pathlib import Path

import optuna
import pandas as pd

from nas import report
from nas.space_file import SPACES_DIR
from nas.spec import Candidate

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


def enqueue(study: optuna.Study) -> list[str]:
    """Queues each reference model once as a trial of the study (skipped where already queued or run)."""
    seen = {t.user_attrs.get("reference") for t in study.get_trials(deepcopy=False)}
    queued = []
    for name in all_references():
        if name not in seen:
            study.enqueue_trial({}, user_attrs={"reference": name})
            queued.append(name)
    return queued


def baselines_study_name(dataset: str) -> str:
    return f"baselines-{dataset}"


def baseline_frame(storage, dataset: str, val_size: int, train_subset: int | None) -> pd.DataFrame | None:
    """The measured baselines of this storage (from `search.py baselines`) scored like a study's trials, on the same
    hold-out and training subset, as report rows; None where there are none."""
    name = baselines_study_name(dataset)
    if name not in optuna.get_all_study_names(storage):
        return None
    study = optuna.load_study(study_name=name, storage=storage)
    alike = {t.number for t in study.get_trials(deepcopy=False)
             if (t.user_attrs.get("val_size"), t.user_attrs.get("train_subset")) == (val_size, train_subset)}
    frame = report.trials_frame(study)
    return frame[frame["number"].isin(alike)]
