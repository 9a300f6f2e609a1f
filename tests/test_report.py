import datetime

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from nas.results import report
from nas.engine.study import REJECTED, is_trained

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _frame(rows):
    df = pd.DataFrame(rows)
    for col in report.COLUMNS:
        if col not in df:
            df[col] = None
    return df


def test_pareto_keeps_only_undominated_trials():
    df = _frame([
        dict(number=0, state="COMPLETE", params=5000, val_acc=0.97),
        dict(number=1, state="COMPLETE", params=8000, val_acc=0.96),   # dominated by 0
        dict(number=2, state="COMPLETE", params=12000, val_acc=0.985),
        dict(number=3, state="COMPLETE", params=12000, val_acc=0.98),  # same size, worse
        dict(number=4, state="PRUNED", params=3000, val_acc=None),
        dict(number=5, state="COMPLETE", params=20000, val_acc=0.99),
    ])
    assert report.pareto_frontier(df)["number"].tolist() == [0, 2, 5]


def _study_with_trials():
    study = optuna.create_study(direction="maximize")
    for number, (params, acc, state, attrs) in enumerate([
        (9000, 0.97, TrialState.COMPLETE, {}),
        (30000, None, TrialState.PRUNED, {"rejected": REJECTED}),
        (15000, 0.98, TrialState.COMPLETE, {"reference": "R1"}),
        (12000, None, TrialState.PRUNED, {}),
        (11000, None, TrialState.FAIL, {"fail_reason": "TrainingDiverged: loss became nan", "fail_kind": "candidate",
                                        "projected_s": 42.5}),
    ]):
        trial = study.ask()
        trial.set_user_attr("params", params)
        trial.set_user_attr("flops", params * 100)
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        if acc is not None:
            trial.set_user_attr("val_acc", acc)
            trial.set_user_attr("test_acc", acc - 0.001)  # as trials of older versions stored it: never read
            trial.set_user_attr("train_seconds", 1.5)
        if state == TrialState.PRUNED and not attrs:
            trial.report(0.5, 20)
        study.tell(trial, acc if state == TrialState.COMPLETE else None, state=state)
    return study


def test_trials_frame_has_every_trial_and_the_counting_rules():
    study = _study_with_trials()
    df = report.trials_frame(study)
    assert len(df) == 5
    assert df.loc[1, "rejected"] == REJECTED and pd.isna(df.loc[1, "pruned_at"])
    assert df.loc[3, "pruned_at"] == 20 and df.loc[3, "last_reading"] == 0.5
    assert [is_trained(t) for t in study.trials] == [True, False, True, True, True]
    assert df.loc[4, "fail_kind"] == "candidate" and df.loc[4, "projected_s"] == 42.5  # whether it counted; its pace


def test_trials_frame_keeps_the_newest_reading_exact_durations_and_none_for_absent_attributes():
    study = optuna.create_study(direction="maximize")
    start = datetime.datetime(2026, 1, 1)
    took = datetime.timedelta(microseconds=10_002_942)  # where pandas' total_seconds differs from Python's
    for state, readings in [(TrialState.COMPLETE, {20: 0.5, 40: 0.7, 100: 0.9}), (TrialState.FAIL, {20: 0.3})]:
        study.add_trial(optuna.trial.FrozenTrial(
            number=0, trial_id=0, state=state, value=0.9 if state == TrialState.COMPLETE else None, values=None,
            datetime_start=start, datetime_complete=start + took, params={}, distributions={},
            user_attrs={"params": 5}, system_attrs={}, intermediate_values=readings))
    df = report.trials_frame(study)
    assert list(df.columns) == report.COLUMNS and df["last_reading"].tolist() == [0.9, 0.3]
    assert df["pruned_at"].tolist() == [None, None] and df["reference"].tolist() == [None, None]
    assert df["duration_s"].tolist() == [took.total_seconds()] * 2
    assert report.trials_frame(optuna.create_study()).to_csv(index=False).strip() == ",".join(report.COLUMNS)


def test_write_reports(tmp_path):
    study = _study_with_trials()
    df = report.trials_frame(study)
    baselines = df.iloc[[2]].assign(reference="R2", params=8530, val_acc=0.95)
    paths = report.write_reports(df, study.study_name, tmp_path, 25_000, baselines, test={0: 0.5, 2: 0.25, 3: 0.125})
    trials = pd.read_csv(paths["trials"])
    frontier = pd.read_csv(paths["frontier"])
    assert len(trials) == 5 and frontier["number"].tolist() == [0, 2]
    # test accuracy for the frontier alone, as given (what older trials stored is ignored), beside val_acc
    assert "test_acc" not in trials.columns and frontier["test_acc"].tolist() == [0.5, 0.25]
    assert list(frontier.columns) == [*report.COLUMNS[:report.COLUMNS.index("val_acc") + 1], "test_acc",
                                      *report.COLUMNS[report.COLUMNS.index("val_acc") + 1:]]
    html = paths["html"].read_text()
    for text in ("Pareto frontier", "budget 25,000", "R1", "R2", "rejected (over budget"):
        assert text in html
    assert not list(tmp_path.glob(".*.tmp"))


def test_the_device_figures_are_columns_of_trials_and_frontier_csv(tmp_path):
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    for key, value in dict(params=9000, flops=2_500_000, peak_kb=36.75, latency_ms=0.21, val_acc=0.97,
                           test_acc=0.96).items():
        trial.set_user_attr(key, value)
    study.tell(trial, 0.97)
    paths = report.write_reports(report.trials_frame(study), study.study_name, tmp_path, 25_000)
    for name in ("trials", "frontier"):
        row = pd.read_csv(paths[name]).iloc[0]
        assert (row["flops"], row["peak_kb"], row["latency_ms"]) == (2_500_000, 36.75, 0.21), name


def test_the_plot_is_validation_error_on_a_log_axis_zoomed_to_the_trained_trials():
    """Better is up; the pruned trial's reading (val 50%) and the rejected trial sit on the bottom edge, not in range."""
    study = _study_with_trials()
    df = report.trials_frame(study)
    frontier = report.with_test(report.pareto_frontier(df), {0: 0.965, 2: 0.975})
    fig = report.frontier_figure(df, frontier, report.reference_points(df, None), 25_000, "t")
    axis = fig.layout.yaxis
    bottom, top = axis.range
    assert axis.type == "log" and bottom > top  # the worst error at the bottom
    assert 10 ** top < 0.02 < 0.03 < 10 ** bottom < 0.05  # the trained trials' errors, 2% and 3%, with a margin
    traces = {t.name.split(" (")[0]: t for t in fig.data}
    assert list(traces["Pareto frontier"].y) == pytest.approx([0.03, 0.02])
    for name in ("pruned early", "rejected"):
        (y,) = traces[name].y
        assert 0.03 < y < 10 ** bottom, name  # clipped into the margin under the worst trained trial
    assert traces["Pareto frontier"].hovertext == (
        "trial 0<br>9,000 params<br>0.90 MFLOPs<br>val 97.00%<br>test 96.50%",
        "trial 2<br>15,000 params<br>1.50 MFLOPs<br>val 98.00%<br>test 97.50%")
    assert traces["trained trials"].hovertext == ("trial 0<br>9,000 params<br>0.90 MFLOPs<br>val 97.00%<br>1.5 s",)
    assert traces["pruned early"].hovertext == (
        "trial 3<br>12,000 params<br>1.20 MFLOPs<br>pruned at 20% of the epoch: val 50.00%",)
    assert traces["rejected"].hovertext == ("trial 1<br>30,000 params<br>3.00 MFLOPs<br>over budget",)
    assert traces["reference models"].hovertext == ("trial 2<br>15,000 params<br>1.50 MFLOPs<br>R1<br>val 98.00%",)
