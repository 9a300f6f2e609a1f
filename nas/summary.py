"""The end of a run: reports and the best model written from the storage, and the printed summary."""
from __future__ import annotations

import shlex
from pathlib import Path

import optuna

from nas import data, export, logs, references, report
from nas import study as study_mod
from nas.config import SearchConfig
from nas.storage import fail_stale_trials, sqlalchemy_url

RESULT_FILES = "trials.csv, frontier.csv, frontier.html, best.safetensors, best.json, best.onnx"
# each kind of rejection, as the summary counts it
REJECTIONS = ((study_mod.REJECTED, "over the param budget (never trained)"),
              (study_mod.REJECTED_FLOPS, "over the compute ceiling (never trained)"),
              (study_mod.REJECTED_MEMORY, "over the peak-memory ceiling (never trained)"),
              (study_mod.REJECTED_LATENCY, "over the latency ceiling (never trained)"),
              (study_mod.REJECTED_SLOW, "too slow (stopped after 50 steps)"))


def finish(config: SearchConfig, study: optuna.Study, seconds: float) -> dict:
    """Writes the reports, exports the best model and prints the summary."""
    logs.configure(config.quiet)
    name = study.study_name
    out_dir = config.out_dir(name)
    fail_stale_trials(study)
    paths = write_all(study, config, out_dir)
    df = report.trials_frame(study)
    failed = df[df["state"] == "FAIL"]
    interrupted = int(failed["fail_reason"].isna().sum())  # a signal or a killed worker: not counted
    rejected = df["rejected"].value_counts()
    logs.line("")
    counts = ", ".join(f"{rejected.get(reason, 0)} {text}" for reason, text in REJECTIONS)
    logs.line(f"done in {seconds:.0f} s: {study_mod.trained_count(study)} trained trial(s); rejected, not counted: "
              f"{counts}; {len(failed) - interrupted} failed, {interrupted} interrupted (not counted)")
    frontier = report.pareto_frontier(df)
    if len(frontier):
        logs.line("Pareto frontier (params, val acc, test acc):")
        for _, row in frontier.iterrows():
            logs.line(f"  trial {int(row['number']):>4}  {int(row['params']):>7,}  {row['val_acc']:.2%}  "
                      f"{row['test_acc']:.2%}")
    best = study_mod.best_trial(study)
    if best is not None:
        logs.line(f"best: trial {best.number}, {best.user_attrs['params']:,} params, val {best.value:.2%}, "
                  f"test {best.user_attrs['test_acc']:.2%} -> {paths.get('best')}")
    else:
        failed = df[df["fail_reason"].notna()]["fail_reason"].value_counts()
        logs.line("no trial completed." + ("" if failed.empty else " Failures: " + "; ".join(
            f"{n}x {reason}" for reason, n in failed.items())))
    logs.line(f"results: {out_dir}/ ({RESULT_FILES})")
    logs.line(f"dashboard: {dashboard_command(config, name)}")
    return {"study": name, "best": best.number if best else None, "paths": paths}


def write_all(study: optuna.Study, config: SearchConfig, out_dir: Path) -> dict[str, Path]:
    """trials.csv, frontier.csv, frontier.html and the best trial's weights, all from the storage."""
    identity = study.user_attrs
    baselines = references.baseline_frame(study._storage, config.dataset,
                                          identity.get("val_size", data.LEGACY_VAL_SIZE), identity.get("train_subset"))
    max_params = identity.get("max_params", config.max_params)
    paths = report.write_reports(study, out_dir, max_params, baselines, config.epochs)
    best = study_mod.best_trial(study)
    if best is not None and best.user_attrs.get("weights_artifact"):
        store = export.artifact_store(config.artifacts(study.study_name))
        legacy = export.legacy_info(identity.get("dataset", config.dataset))  # for trials made before data was recorded
        paths["best"] = export.export_trial(best, store, out_dir / "best.safetensors", legacy)
        onnx = best_onnx(paths["best"], out_dir / "best.onnx", config)
        if onnx is not None:
            paths["onnx"] = onnx
    return paths


def best_onnx(weights: Path, out: Path, config: SearchConfig) -> Path | None:
    """best.onnx from best.safetensors, checked on the test images of the data it records; none for tensors handed
    to the search by a program, which cannot be read again."""
    info = export.read_spec(weights)[1]
    if info is None or info.source == "tensors":
        return None
    from nas import deploy  # onnx and onnxruntime take a second or two to import

    return deploy.write_best_onnx(weights, out, deploy.data_for(info, config))


def dashboard_command(config: SearchConfig, study_name: str) -> str:
    """The exact command that opens this storage, weights included, in optuna-dashboard (run from the same folder)."""
    url = sqlalchemy_url(config.storage_url)  # the dashboard lacks psycopg2 too: name the psycopg 3 driver
    return shlex.join(["optuna-dashboard", url, "--artifact-dir", str(config.artifacts(study_name))])
