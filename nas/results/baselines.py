"""The reference networks trained by `search.py baselines`: their study, and their rows for a study's reports."""
from __future__ import annotations

import optuna
import pandas as pd

from nas.results import report


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
