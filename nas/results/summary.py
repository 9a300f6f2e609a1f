"""The end of a run: reports and the best model written from the storage, and the printed summary."""
from __future__ import annotations

import shlex
from pathlib import Path

import optuna
import pandas as pd

from nas.results import baselines, report, scoring
from nas import data, logs
from nas.deploy import export
from nas.engine import artifact_store, study as study_mod
from nas.config import Mode, SearchConfig
from nas.engine.storage import PROXY_SCHEME, fail_stale_trials, open_storage, sqlalchemy_url

NO_TEST = "the data the trials trained on cannot be read again (tensors handed to the search by a program)"
RESULT_FILES = "trials.csv, frontier.csv, frontier.html, best.safetensors, best.json, best.onnx"
MICROCONTROLLER_FILES = ", best.tflite, best_data.cc, best_data.h"  # with the microcontroller ceilings
# each kind of rejection, as the summary counts it
REJECTIONS = ((study_mod.REJECTED, "over the param budget (never trained)"),
              (study_mod.REJECTED_FLOPS, "over the compute ceiling (never trained)"),
              (study_mod.REJECTED_MEMORY, "over the peak-memory ceiling (never trained)"),
              (study_mod.REJECTED_TFLM, "with a layer TFLM cannot run (never trained)"),
              (study_mod.REJECTED_ARENA, "over the arena ceiling (never trained)"),
              (study_mod.REJECTED_FLASH, "over the flash ceiling (never trained)"),
              (study_mod.REJECTED_LATENCY, "over the latency ceiling (never trained)"),
              (study_mod.REJECTED_SLOW, "too slow (stopped after 50 steps)"),
              (study_mod.REJECTED_SURPLUS, "surplus (started as the trials before it made up --trials)"))


def finish(config: SearchConfig, study: optuna.Study, seconds: float, splits: data.Splits | None = None) -> dict:
    """Writes the reports, exports the best model and prints the summary; `splits`, the search's data if it was read
    already, gives the test images (else they are read again)."""
    logs.configure(config.quiet)
    name = study.study_name
    out_dir = config.out_dir(name)
    fail_stale_trials(study)
    paths, test, df, unreachable = write_results(study, config, out_dir, splits)
    failed = df[df["state"] == "FAIL"]
    interrupted = int(failed["fail_reason"].isna().sum())  # a signal or a killed worker: not counted
    rejected = df["rejected"].value_counts()
    logs.line("")
    counts = ", ".join(f"{rejected[reason]} {text}" for reason, text in REJECTIONS if rejected.get(reason)) or "none"
    logs.line(f"done in {seconds:.0f} s: {study_mod.trained_count(study)} trained trial(s); rejected, not counted: "
              f"{counts}; {len(failed) - interrupted} failed, {interrupted} interrupted (not counted)")
    mode = Mode.of_study(study.user_attrs)
    frontier = report.pareto_frontier(df, mode.size_attr)
    if len(frontier):
        logs.line(f"Pareto {mode.frontier_name} ({mode.size}, val acc, test acc):")
        for _, row in frontier.iterrows():
            logs.line(f"  trial {int(row['number']):>4}  {size_text(mode.size_of(row)):>7}  {row['val_acc']:.2%}  "
                      f"{percent(test.get(row['number']))}")
        if not test and not unreachable:
            logs.line(f"  (no test accuracy: {NO_TEST})")
        if mode.pareto:
            logs.line(f"pick one: the most accurate member under your {mode.size} limit (the last row of frontier.csv "
                      f"below it), then `{pick_command(name, 'N')}`; `evaluate --study {name} --trial N` tests it")
    best = study_mod.best_trial(study)
    if best is not None:
        logs.line(f"best: trial {best.number}, {best.user_attrs['params']:,} params, val {best.values[0]:.2%}, "
                  f"test {percent(test.get(best.number))} -> {paths.get('best', 'not written (see above)')}")
    else:
        failed = df[df["fail_reason"].notna()]["fail_reason"].value_counts()
        logs.line("no trial completed." + ("" if failed.empty else " Failures: " + "; ".join(
            f"{n}x {reason}" for reason, n in failed.items())))
    logs.line(f"results: {out_dir}/ ({RESULT_FILES}{MICROCONTROLLER_FILES if 'tflite' in paths else ''})")
    logs.line(f"dashboard: {dashboard_command(config, name)}")
    return {"study": name, "best": best.number if best else None, "paths": paths}


def write_all(study: optuna.Study, config: SearchConfig, out_dir: Path) -> dict[str, Path]:
    """trials.csv, frontier.csv, frontier.html and the best trial's weights, all from the storage."""
    return write_results(study, config, out_dir)[0]


def write_results(study: optuna.Study, config: SearchConfig, out_dir: Path, splits: data.Splits | None = None
                  ) -> tuple[dict[str, Path], dict[int, float], pd.DataFrame, list]:
    """write_all's files; the test accuracy (by trial number) of the frontier and the best, computed here from
    their stored weights: the only trials ever scored on the test set; the trials frame they came from; and the
    shown trials whose weights this machine cannot reach (the reports go without them, and one line says so)."""
    identity = study.user_attrs
    max_params = identity.get("max_params", config.max_params)
    store = artifact_store.reader(config, study)
    best = study_mod.best_trial(study)
    df = report.trials_frame(study)
    test, splits, unreachable = scoring.accuracies(shown_trials(study, df, best), store, config, splits)
    paths = report.write_reports(df, study.study_name, out_dir, max_params, baselines_of(study, config), config.epochs,
                                 test, Mode.of_study(identity).size_attr)
    if unreachable:  # weights on another machine's disk: every other report is written, and this one line
        logs.LOGGER.warning(unreachable_line(unreachable, best))
    lost = {t.number for t in unreachable}
    if best is not None and best.user_attrs.get("weights_artifact") and best.number not in lost:
        paths["best"] = export.export_trial(best, store, out_dir / "best.safetensors")
        if splits is not None:  # best.onnx is checked on the test images: none for data that cannot be read again
            from nas.deploy import onnx_deploy as deploy  # onnx and onnxruntime take a second or two to import

            paths["onnx"] = deploy.write_best_onnx(paths["best"], out_dir / "best.onnx", splits)
            if config.microcontroller:  # best.tflite (int8) and its C array, checked by TFLM
                from nas.deploy import tflite_deploy

                tflite = tflite_deploy.write_best_tflite(paths["best"], out_dir / "best.tflite", splits)
                paths.update({"tflite": tflite} if tflite else {})
    return paths, test, df, unreachable


def unreachable_line(trials: list[optuna.trial.FrozenTrial], best) -> str:
    """The one line for shown trials whose weights this machine cannot read: the best first, where they are, what
    was not written."""
    the_best = [t for t in trials if best is not None and t.number == best.number]
    first = the_best[0] if the_best else trials[0]
    others = f" (nor are {len(trials) - 1} other shown trial(s)')" if len(trials) > 1 else ""
    missing = "best.safetensors and best.onnx are not written" if the_best else "its test accuracy is not shown"
    return (f"{export.unreachable_weights(first)}{others}: {missing}; run report or export on "
            f"{first.user_attrs.get('weights_host', 'the machine that holds them')}, or {export.SHARED_STORE_HINT}")


def baselines_of(study: optuna.Study, config: SearchConfig) -> pd.DataFrame | None:
    """The storage's measured reference models, scored on the study's hold-out and subset, as report rows."""
    identity = study.user_attrs
    return baselines.baseline_frame(open_storage(config.storage_url), config.dataset,
                                    identity.get("val_size", data.VAL_SIZE), identity.get("train_subset"))


def figure(study: optuna.Study, config: SearchConfig, frontier: pd.DataFrame):
    """The plotly figure of frontier.html, with `frontier` as frontier.csv holds it."""
    df = report.trials_frame(study)
    return report.frontier_figure(df, frontier, report.reference_points(df, baselines_of(study, config)),
                                  study.user_attrs.get("max_params", config.max_params),
                                  report.title(study.study_name), config.epochs,
                                  Mode.of_study(study.user_attrs).size_attr)


def shown_trials(study: optuna.Study, df: pd.DataFrame, best) -> list:
    """The trials a report shows with their test accuracy: the frontier's (from its trials_frame `df`), and the best
    (on it but for ties)."""
    frontier = report.pareto_frontier(df, Mode.of_study(study.user_attrs).size_attr)
    numbers = set(frontier["number"]) | ({best.number} if best else set())
    trials = study.get_trials(deepcopy=False)
    return [trials[n] for n in sorted(numbers)]


def size_text(value: float) -> str:
    """A size as the summary prints it: whole numbers with thousands separators, others to 4 figures."""
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.4g}"


def pick_command(name: str, trial: int | str) -> str:
    """The command that exports one member of the Pareto set."""
    return shlex.join(["python", "search.py", "export", "--study", name, "--trial", str(trial), "--out",
                       f"trial-{trial}.safetensors"])


def percent(acc: float | None) -> str:
    """An accuracy as the summary prints it; "-" where none was computed."""
    return "-" if acc is None else f"{acc:.2%}"


def dashboard_command(config: SearchConfig, study_name: str) -> str:
    """The exact command that opens this storage, weights included, in optuna-dashboard (run from the same folder):
    its own for weights in a folder, else search.py's dashboard command, which reads a bucket or a database."""
    folder = artifact_store.folder_of(config, study_name)
    if folder is None or config.storage_url.startswith(PROXY_SCHEME):  # optuna-dashboard cannot open grpc://
        given = ["--artifact-store", config.artifact_store] if config.artifact_store else []
        return shlex.join(["python", "search.py", "dashboard", "--study", study_name, "--storage", config.storage_url,
                           *given])
    url = sqlalchemy_url(config.storage_url)  # the dashboard lacks psycopg2 too: name the psycopg 3 driver
    return shlex.join(["optuna-dashboard", url, "--artifact-dir", str(folder)])
