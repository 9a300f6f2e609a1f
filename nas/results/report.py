"""Trials -> pandas DataFrame -> CSV; the Pareto frontier -> CSV and a plotly page. All from the storage alone, but
for the frontier's test accuracy, computed from its stored weights by the caller (nas.results.scoring)."""
from __future__ import annotations

import math
from pathlib import Path

import optuna
import pandas as pd
import plotly.graph_objects as go

from nas.fileio import atomic_path, write_text
from nas.engine.study import REJECTED

COLUMNS = ["number", "state", "params", "flops", "peak_kb", "arena_kb", "flash_kb", "latency_ms", "val_acc",
           "train_seconds", "projected_s", "host", "reference", "rejected", "pruned_at", "last_reading", "fail_reason",
           "fail_kind", "candidate_id", "duration_s"]
# the columns that are the trials' user attributes (peak_kb at the study's precision, fp32 unless --int8-memory); a
# test_acc stored by trials of older versions is left out: only the trials a report shows are scored on the test set
ATTRS = ["params", "flops", "peak_kb", "arena_kb", "flash_kb", "latency_ms", "val_acc", "train_seconds", "projected_s",
         "host", "reference", "rejected", "fail_reason", "fail_kind", "candidate_id"]
READING = "val_at_"  # the prefix of a pareto trial's within-run readings (nas.engine.study.readings_key)
ERROR_FLOOR = 1e-4  # an error rate of 0 is drawn at 0.01%: a log axis has no zero
# the frontier plot's x axis title for each size column (pareto mode plots its size metric)
AXIS_TITLES = {"params": "parameters", "flops": "FLOPs per image", "peak_kb": "peak activation memory (KB)",
               "latency_ms": "latency (ms, batch 1)"}


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial in COLUMNS: Optuna's trials_dataframe narrowed to our user attributes, plus the newest
    intermediate reading and the duration. A user attribute no trial has is a column of None."""
    df = study.trials_dataframe(("number", "state", "duration", "user_attrs", "intermediate_values"), multi_index=True)
    if df.empty:
        return pd.DataFrame(columns=COLUMNS)
    attrs = df.get("user_attrs", pd.DataFrame(index=df.index))
    readings = within_run(df, attrs).stack().dropna()
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


def within_run(df: pd.DataFrame, attrs: pd.DataFrame) -> pd.DataFrame:
    """Each trial's readings by percent of its run: its intermediate values, or a pareto study's `val_at_<percent>`
    user attrs (nas.engine.study.readings_key), one column per percent, ascending."""
    if "intermediate_values" in df:
        return df["intermediate_values"]
    cols = {int(c[len(READING):]): attrs[c] for c in attrs.columns if str(c).startswith(READING)}
    return pd.DataFrame(dict(sorted(cols.items())), index=df.index)


def pareto_frontier(df: pd.DataFrame, size: str = "params") -> pd.DataFrame:
    """Completed trials not dominated in (higher val_acc, smaller `size`, a column), sorted by size."""
    done = df[(df["state"] == "COMPLETE") & df["val_acc"].notna() & df[size].notna()]
    done = done.sort_values([size, "val_acc"], ascending=[True, False])
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


def with_test(frontier: pd.DataFrame, test: dict[int, float] | None) -> pd.DataFrame:
    """The frontier with a test_acc column after val_acc: each member's from `test` (by trial number), else NaN."""
    out = frontier.copy()
    out.insert(out.columns.get_loc("val_acc") + 1, "test_acc", frontier["number"].map(test or {}).astype(float))
    return out


def error(acc: pd.Series) -> pd.Series:
    """Accuracy -> error rate, at least ERROR_FLOOR."""
    return (1 - acc.astype(float)).clip(lower=ERROR_FLOOR)


def y_axis(errors: pd.Series) -> tuple[list[float], float]:
    """The y axis' range (log10, the worst error at the bottom) around `errors`, and the error drawn on its bottom
    edge, where pruned and rejected trials are clipped so that they do not stretch it."""
    errors = errors.dropna()
    lo, hi = (math.log10(errors.min()), math.log10(errors.max())) if len(errors) else (-2.0, 0.0)
    pad = max(0.05, 0.08 * (hi - lo))
    return [hi + pad, lo - pad], 10 ** (hi + pad / 2)


def hover(rows: pd.DataFrame, lines) -> list[str]:
    """Each row's hover text: its trial number, params and MFLOPs, then `lines(row)`."""
    def text(row) -> str:
        mflops = "" if pd.isna(row["flops"]) else f"<br>{row['flops'] / 1e6:,.2f} MFLOPs"
        return "<br>".join([f"trial {int(row['number'])}<br>{int(row['params']):,} params{mflops}", *lines(row)])
    return [text(row) for _, row in rows.iterrows()]


def shown(value, template: str) -> list[str]:
    """`template` filled with `value`, or nothing for a missing value."""
    return [] if pd.isna(value) else [template.format(value)]


def scores(row) -> list[str]:
    """Validation accuracy, and test accuracy where it was computed (frontier members)."""
    return [f"val {row['val_acc']:.2%}", *shown(row.get("test_acc"), "test {:.2%}")]


def frontier_figure(df: pd.DataFrame, frontier: pd.DataFrame, refs: pd.DataFrame, max_params: int | None,
                    title: str, epochs: int = 1, size: str = "params") -> go.Figure:
    """Validation error against params on a log axis, better up, zoomed to the trained trials: pruned trials' last
    readings and rejected candidates sit on the bottom edge (at their reading if it is within range)."""
    fig = go.Figure()
    done = df[(df["state"] == "COMPLETE") & df["reference"].isna()]
    early = df[df["pruned_at"].notna() & df["last_reading"].notna()]
    rejected = df[df["rejected"] == REJECTED]
    span, edge = y_axis(pd.concat([error(t["val_acc"]) for t in (done, frontier, refs)]))

    def points(rows, y, name, lines, **style):
        fig.add_trace(go.Scatter(x=rows[size], y=y, name=name, hovertext=hover(rows, lines), hoverinfo="text",
                                 **{"mode": "markers", **style}))

    points(done, error(done["val_acc"]), "trained trials",
           lambda r: [*scores(r), *shown(r["train_seconds"], "{:.1f} s")])
    points(early, error(early["last_reading"]).clip(upper=edge), "pruned early (last reading; bottom edge if lower)",
           lambda r: [f"pruned at {r['pruned_at']:.0f}% of the epoch: val {r['last_reading']:.2%}"],
           marker=dict(color="lightgrey"))
    points(rejected, [edge] * len(rejected), "rejected (over budget, never trained)", lambda r: ["over budget"],
           marker=dict(symbol="x", color="firebrick"))
    points(frontier, error(frontier["val_acc"]), "Pareto frontier", scores, mode="lines+markers", line_shape="hv",
           marker=dict(size=10, color="black"), line=dict(color="black"))
    if len(refs):
        points(refs, error(refs["val_acc"]), "reference models", lambda r: [r["reference"], *scores(r)],
               mode="markers+text", text=refs["reference"], textposition="top center",
               marker=dict(symbol="star", size=14, color="darkorange"))
    if max_params and size == "params":
        fig.add_vline(x=max_params, line_dash="dash", line_color="firebrick",
                      annotation_text=f"budget {max_params:,}", annotation_position="top left")
    trained = "one epoch" if epochs == 1 else f"{epochs} epochs"
    fig.update_layout(title=title, xaxis_title=AXIS_TITLES.get(size, size),
                      yaxis=dict(title=f"validation error, log scale ({trained}); better is up", type="log",
                                 range=span, tickformat=".2~%"),
                      template="plotly_white", legend=dict(orientation="h", y=-0.2))
    return fig


def title(name: str) -> str:
    """The frontier plot's title for study `name`."""
    return f"{name}: accuracy against size"


def write_reports(df: pd.DataFrame, name: str, out_dir: Path, max_params: int | None,
                  baselines: pd.DataFrame | None = None, epochs: int = 1,
                  test: dict[int, float] | None = None, size: str = "params") -> dict[str, Path]:
    """From study `name`'s trials_frame `df`: trials.csv (validation only), frontier.csv (with `test`, test accuracy
    by trial number) and frontier.html, whose x axis is `size` (a column; params but in pareto mode)."""
    out_dir = Path(out_dir)
    frontier = with_test(pareto_frontier(df, size), test)
    refs = reference_points(df, baselines)
    paths = {"trials": out_dir / "trials.csv", "frontier": out_dir / "frontier.csv", "html": out_dir / "frontier.html"}
    write_text(paths["trials"], df.to_csv(index=False))
    write_text(paths["frontier"], frontier.to_csv(index=False))
    fig = frontier_figure(df, frontier, refs, max_params, title(name), epochs, size)
    with atomic_path(paths["html"]) as tmp:
        fig.write_html(str(tmp), include_plotlyjs=True, full_html=True)
    return paths
