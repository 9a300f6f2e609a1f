"""Trials -> pandas DataFrame -> CSV; the Pareto frontier -> CSV and a plotly page. All from the storage alone."""
from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
import plotly.graph_objects as go

from nas.fileio import atomic_path, write_text
from nas.study import REJECTED

COLUMNS = ["number", "state", "params", "flops", "peak_kb", "latency_ms", "val_acc", "test_acc", "train_seconds",
           "reference", "rejected", "pruned_at", "last_reading", "fail_reason", "candidate_id", "duration_s"]
# the columns that are the trials' user attributes (peak_kb at the study's precision, fp32 unless --int8-memory)
ATTRS = ["params", "flops", "peak_kb", "latency_ms", "val_acc", "test_acc", "train_seconds", "reference", "rejected",
         "fail_reason", "candidate_id"]


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial in COLUMNS: Optuna's trials_dataframe narrowed to our user attributes, plus the newest
    intermediate reading and the duration. A user attribute no trial has is a column of None."""
    df = study.trials_dataframe(("number", "state", "duration", "user_attrs", "intermediate_values"), multi_index=True)
    if df.empty:
        return pd.DataFrame(columns=COLUMNS)
    attrs = df.get("user_attrs", pd.DataFrame(index=df.index))
    readings = df.get("intermediate_values", pd.DataFrame(index=df.index)).stack().dropna()
    newest = {row: (step, value) for (row, step), value in readings.items()}  # steps ascend: the last one wins
    step, reading = zip(*(newest.get(row, (None, None)) for row in df.index))
    pruned = (df["state"] == "PRUNED") & (attrs.get("rejected") != REJECTED)
    return pd.DataFrame({
        "number": df["number"], "state": df["state"], **{a: attrs.get(a) for a in ATTRS},
        "pruned_at": [s if p else None for s, p in zip(step, pruned)],
        "last_reading": list(reading),
        # Python's total_seconds: pandas' own differs in the last digit for about 1 trial in 200
        "duration_s": [None if pd.isna(d) else d.to_pytimedelta().total_seconds() for d in df["duration"]],
    }, columns=COLUMNS)


def pareto_frontier(df: pd.DataFrame) -> pd.DataFrame:
    """Completed trials not dominated in (higher val_acc, fewer params), sorted by params."""
    done = df[(df["state"] == "COMPLETE") & df["val_acc"].notna()]
    done = done.sort_values(["params", "val_acc"], ascending=[True, False])
    keep, best = [], -1.0
    for idx, row in done.iterrows():
        if row["val_acc"] > best:
            keep.append(idx)
            best = row["val_acc"]
    return done.loc[keep].reset_index(drop=True)


def reference_points(df: pd.DataFrame, baselines: pd.DataFrame | None) -> pd.DataFrame:
    """The newest measurement of each reference model: warm-start trials of this study, else `baselines`."""
    frames = [f for f in (baselines, df) if f is not None and len(f)]
    if not frames:
        return df.iloc[0:0]
    both = pd.concat(frames, ignore_index=True)
    refs = both[both["reference"].notna() & (both["state"] == "COMPLETE")]
    return refs.drop_duplicates("reference", keep="last").sort_values("params")


def frontier_figure(df: pd.DataFrame, frontier: pd.DataFrame, refs: pd.DataFrame, max_params: int | None,
                    title: str, epochs: int = 1) -> go.Figure:
    fig = go.Figure()
    done = df[(df["state"] == "COMPLETE") & df["reference"].isna()]
    early = df[df["pruned_at"].notna() & df["last_reading"].notna()]
    rejected = df[df["rejected"] == REJECTED]
    hover = "trial %{customdata[0]}<br>%{x:,} params<br>val %{y:.2%}<br>test %{customdata[1]:.2%}<br>%{customdata[2]:.1f} s"
    fig.add_trace(go.Scatter(x=done["params"], y=done["val_acc"], mode="markers", name="trained trials",
                             customdata=done[["number", "test_acc", "train_seconds"]].values, hovertemplate=hover))
    fig.add_trace(go.Scatter(x=early["params"], y=early["last_reading"], mode="markers", name="pruned early (last reading)",
                             marker=dict(color="lightgrey"), customdata=early[["number", "pruned_at"]].values,
                             hovertemplate="trial %{customdata[0]}<br>%{x:,} params<br>%{y:.2%} at %{customdata[1]}% of the epoch"))
    floor = float(df["val_acc"].min()) if df["val_acc"].notna().any() else 0.9
    fig.add_trace(go.Scatter(x=rejected["params"], y=[floor] * len(rejected), mode="markers", name="rejected (over budget, never trained)",
                             marker=dict(symbol="x", color="firebrick"), customdata=rejected[["number"]].values,
                             hovertemplate="trial %{customdata[0]}<br>%{x:,} params: over budget"))
    fig.add_trace(go.Scatter(x=frontier["params"], y=frontier["val_acc"], mode="lines+markers", line_shape="hv",
                             name="Pareto frontier", marker=dict(size=10, color="black"), line=dict(color="black")))
    if len(refs):
        fig.add_trace(go.Scatter(x=refs["params"], y=refs["val_acc"], mode="markers+text", name="reference models",
                                 text=refs["reference"], textposition="top center",
                                 marker=dict(symbol="star", size=14, color="darkorange")))
    if max_params:
        fig.add_vline(x=max_params, line_dash="dash", line_color="firebrick",
                      annotation_text=f"budget {max_params:,}", annotation_position="top left")
    trained = "one epoch" if epochs == 1 else f"{epochs} epochs"
    fig.update_layout(title=title, xaxis_title="parameters", yaxis_title=f"validation accuracy ({trained})",
                      yaxis_tickformat=".1%", template="plotly_white", legend=dict(orientation="h", y=-0.2))
    return fig


def write_reports(study: optuna.Study, out_dir: Path, max_params: int | None,
                  baselines: pd.DataFrame | None = None, epochs: int = 1) -> dict[str, Path]:
    out_dir = Path(out_dir)
    df = trials_frame(study)
    frontier = pareto_frontier(df)
    refs = reference_points(df, baselines)
    paths = {"trials": out_dir / "trials.csv", "frontier": out_dir / "frontier.csv", "html": out_dir / "frontier.html"}
    write_text(paths["trials"], df.to_csv(index=False))
    write_text(paths["frontier"], frontier.to_csv(index=False))
    fig = frontier_figure(df, frontier, refs, max_params, f"{study.study_name}: accuracy against size", epochs)
    with atomic_path(paths["html"]) as tmp:
        fig.write_html(str(tmp), include_plotlyjs=True, full_html=True)
    return paths
