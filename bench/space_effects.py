"""Which choices of a search space scored well: per-choice effects on accuracy, pooled over stored studies.

    python bench/space_effects.py results/bench*/nas.db [--budget 25000] [--min-share 0.6]

Takes the finished trials that used at least --min-share of the budget, from every study searched with it.
It fits validation accuracy by least squares on the following (the test set is never looked at: it decides nothing):
- one offset per study, so a choice is not credited with the luck of the study that favoured it;
- the size, as a share of the budget;
- every searched choice: one column per level of a categorical, and the value of a number (its log10 where the
  study sampled it log-uniformly).
It prints each effect in accuracy points with its standard error. A level is measured against the first level
seen. The figures are evidence for editing a space file, never a selection rule: TPE's choices are correlated,
so only effects that hold at several budgets and over several seeds deserve trust.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

optuna.logging.set_verbosity(optuna.logging.ERROR)


def finished_trials(db: Path, budget: int, min_share: float) -> tuple[pd.DataFrame, set[str]]:
    """The trials, and the names of the choices sampled as floats (the others are levels, integers included)."""
    url = f"sqlite:///{db}"
    rows, floats = [], set()
    for summary in optuna.get_all_study_summaries(url):
        # each search labels its study with its budget and subset (nas.run.open_study); smoke tests are left out
        if summary.user_attrs.get("max_params") != budget or summary.user_attrs.get("train_subset") is not None:
            continue
        for t in optuna.load_study(study_name=summary.study_name, storage=url).get_trials(deepcopy=False):
            if t.state.name != "COMPLETE" or t.value is None or t.user_attrs.get("params", 0) < min_share * budget:
                continue
            row = {k: (math.log10(v) if getattr(t.distributions[k], "log", False) and v > 0 else v)
                   for k, v in t.params.items()}
            row.update(study=f"{db.parent.name}/{summary.study_name}", size=t.user_attrs["params"] / budget,
                       val=100 * t.value)
            rows.append(row)
            floats |= {k for k, d in t.distributions.items() if isinstance(d, optuna.distributions.FloatDistribution)}
    return pd.DataFrame(rows), floats


def design(df: pd.DataFrame, floats: set[str]) -> pd.DataFrame:
    """Columns to fit: study offsets, then size and float choices as they are, and other choices (integers such as
    the number of stages included) as one column per level but the first."""
    searched = [c for c in df.columns if c not in ("study", "val")]
    numbers = [c for c in searched if c == "size" or (c in floats and df[c].nunique() > 2)]
    levels = [c for c in searched if c not in numbers and df[c].nunique() > 1]
    # integers left as floats by a missing value (a choice some studies did not offer) print as 2, not 2.0
    text = df[["study"] + levels].map(lambda v: str(int(v)) if isinstance(v, float) and v.is_integer() else str(v))
    x = pd.get_dummies(text, drop_first=True, dtype=float)
    x[numbers] = df[numbers].fillna(df[numbers].mean())  # a conditional choice absent from a trial: its mean
    x = x.loc[:, x.std() > 0].copy()  # a column every trial shares would make the fit singular
    x.insert(0, "offset", 1.0)
    return x


def fit(x: pd.DataFrame, y: pd.Series) -> pd.DataFrame:
    ok = y.notna().to_numpy()
    a, b = x.to_numpy()[ok], y.to_numpy()[ok]
    coef, *_ = np.linalg.lstsq(a, b, rcond=None)
    resid = b - a @ coef
    dof = max(1, len(b) - np.linalg.matrix_rank(a))
    se = np.sqrt(np.diag(resid @ resid / dof * np.linalg.pinv(a.T @ a)))
    return pd.DataFrame({"effect": coef, "se": se}, index=x.columns)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("storages", type=Path, nargs="+", help="SQLite files written by search.py")
    p.add_argument("--budget", type=int, default=25_000, help="studies searched with this --max-params")
    p.add_argument("--min-share", type=float, default=0.6, help="keep trials using at least this share of the budget")
    args = p.parse_args()
    missing = [str(db) for db in args.storages if not db.is_file()]
    if missing:
        sys.exit(f"error: no such storage file: {missing[0]}")
    read = [finished_trials(db, args.budget, args.min_share) for db in args.storages]
    df = pd.concat([trials for trials, _ in read], ignore_index=True)
    if len(df) < 20:
        sys.exit(f"error: only {len(df)} finished trials at --budget {args.budget}: too few to fit")
    x = design(df, set().union(*(floats for _, floats in read)))
    table = fit(x, df.val)
    # study offsets, and "<choice>_nan" (the choice was not offered in some studies), only absorb differences
    table = table.loc[[c for c in table.index
                       if not c.startswith("study_") and not c.endswith("_nan") and c != "offset"]]
    print(f"{len(df)} finished trials from {df.study.nunique()} studies at {args.budget:,} params "
          f"(at least {args.min_share:.0%} of it); effects in accuracy points, ± one standard error")
    print(table.round(3).to_string())


if __name__ == "__main__":
    main()
