"""What each `search.py` command does, given parsed arguments."""
from __future__ import annotations

import argparse
import dataclasses
import functools
import statistics
import warnings
from pathlib import Path

import optuna
import torch

from nas.results import baselines
from nas.deploy import export
from nas.space import references
from nas.engine import artifact_store, study as study_mod
from nas.space.budget import count_params
from nas.config import STUDY_SETTINGS, SearchConfig, config_from
from nas.data import check_fits, load_data, recorded_data
from nas.engine.device import prepare_model, resolve_device
from nas.errors import CliError, StorageError
from nas.fileio import writable_dir
from nas.engine.objective import record_candidate, record_result
from nas.space.spec import Candidate
from nas.engine.storage import open_storage, redact
from nas.results.summary import write_all
from nas.network_card import describe, spec_from
from nas.engine.train import TTA_SHIFTS, train


FORMAT_OF_SUFFIX = {".onnx": "onnx", ".tflite": "tflite"}  # export's format when --format is not given
MODEL_SUFFIX = {"safetensors": ".safetensors", "onnx": ".onnx", "onnx-int8": ".onnx", "tflite": ".tflite",
                "tflite-int8": ".tflite"}  # each export format's file


def dispatch(args: argparse.Namespace) -> int:
    """Every command but `search`, which the command line runs through nas.api.search."""
    if args.command == "describe":
        return describe(args.path)
    config = config_from(vars(args))
    if args.threads:
        torch.set_num_threads(args.threads)
    return {"report": cmd_report, "export": cmd_export, "evaluate": cmd_evaluate,
            "baselines": cmd_baselines, "check": cmd_check, "dashboard": cmd_dashboard}[args.command](config, args)


def stored_study(config: SearchConfig, name: str) -> optuna.Study:
    """The study `name` of the storage `config` names; a missing SQLite file is an error, not a new empty storage."""
    if config.storage is None and not Path(config.results_dir, "nas.db").is_file():
        raise StorageError(f"no storage at {config.storage_url}; run a search first or pass --storage")
    return study_mod.load_study(open_storage(config.storage_url), name)


def as_made(config: SearchConfig, args, study: optuna.Study) -> SearchConfig:
    """`config` with the dataset, epochs and train subset `study` was made with; a flag given with another value is
    an error, since the results would be compared with the wrong data."""
    recorded = study.user_attrs
    for key in STUDY_SETTINGS:
        given, flag = getattr(args, key, None), "--" + key.replace("_", "-")
        if key in recorded and given is not None and given != recorded[key]:
            made = "no " + flag if recorded[key] is None else f"{flag} {recorded[key]}"
            raise CliError(f"{flag} {given}: study {study.study_name!r} was made with {made}; leave {flag} out")
    config = dataclasses.replace(config, **{key: recorded[key] for key in STUDY_SETTINGS if key in recorded})
    source = recorded.get("data_source", "")
    if source.startswith(("folder:", "npz:")) and config.data_dir is None:  # the folder or file the study was made from
        config = dataclasses.replace(config, data_dir=source.split(":", 1)[1])
    return config


def cmd_report(config: SearchConfig, args) -> int:
    study = stored_study(config, args.study)
    config = as_made(config, args, study)
    writable_dir(config.out_dir(study.study_name), "--results-dir")
    paths = write_all(study, config, config.out_dir(study.study_name))
    for kind, path in paths.items():
        print(f"{kind:>9}: {path}")
    return 0


def cmd_export(config: SearchConfig, args) -> int:
    study = stored_study(config, args.study)
    config = as_made(config, args, study)  # the weights are copied as they are; the data of older trials is the study's
    trial = pick_trial(study, args.trial)
    written = export_model(config, study, trial, Path(args.out), args.format)
    print(f"trial {trial.number} ({trial.user_attrs.get('params'):,} params, val {trial.user_attrs.get('val_acc'):.2%}) "
          f"-> {', '.join(map(str, written[:-1]))} and {written[-1]}")
    return 0


def export_model(config: SearchConfig, study: optuna.Study, trial: optuna.trial.FrozenTrial, out: Path,
                 form: str | None, say=print) -> list[Path]:
    """Writes `trial`'s network to `out` as `form` (default: from the suffix), its spec beside it (and its
    weights, or C array, for the formats that take them); returns every file written."""
    writable_dir(out.parent, "--out")
    store = artifact_store.reader(config, study)
    form = form or FORMAT_OF_SUFFIX.get(out.suffix.lower(), "safetensors")
    if form not in MODEL_SUFFIX:
        raise CliError(f"format {form!r}: choose one of {', '.join(MODEL_SUFFIX)}")
    beside = [".json"] + ([".safetensors"] if form != "safetensors" else [])  # written next to the model
    if out.suffix.lower() in beside:
        raise CliError(f"--out {out}: the {out.suffix} file goes beside the {form} model; "
                       f"name the model {out.with_suffix(MODEL_SUFFIX[form])}")
    if form == "safetensors":
        out = export.export_trial(trial, store, out)
    elif form.startswith("tflite"):
        from nas.deploy import tflite_deploy  # the converters take seconds to import: only for a TFLite export

        out = tflite_deploy.export_trial(trial, store, out, config, int8=form == "tflite-int8", say=say)
    else:
        from nas.deploy import onnx_deploy as deploy  # onnx and onnxruntime take seconds to import: only for an ONNX export

        out = deploy.export_trial(trial, store, out, config, int8=form == "onnx-int8", say=say)
    if form == "tflite-int8":
        beside += ["_data.cc", "_data.h"]
    return [out, *(Path(f"{out.with_suffix('')}{suffix}") for suffix in beside)]


def cmd_dashboard(config: SearchConfig, args) -> int:
    """optuna-dashboard's server for the storage, reading a study's weights wherever its trials stored them (its
    own command line reads a folder only); it serves until stopped."""
    import optuna_dashboard

    study = stored_study(config, args.study)
    print(f"dashboard of {redact(config.storage_url)} on http://{args.host}:{args.port}/ (Ctrl-C stops it)", flush=True)
    optuna_dashboard.run_server(open_storage(config.storage_url), host=args.host, port=args.port,
                                artifact_store=artifact_store.reader(config, study))
    return 0


def cmd_check(config: SearchConfig, args) -> int:
    """An exported .onnx or .tflite against its PyTorch weights, on the test images of the data it records."""
    from nas.deploy import onnx_deploy as deploy, tflite_deploy  # onnx and onnxruntime take seconds to import

    checker = tflite_deploy if Path(args.path).suffix.lower() == ".tflite" else deploy
    checker.check_file(Path(args.path), args.weights and Path(args.weights), config)
    return 0


def pick_trial(study: optuna.Study, number: int | None) -> optuna.trial.FrozenTrial:
    """Trial `number` of the study, else its best by validation; a StorageError if there is no such trial."""
    if number is None:
        best = study_mod.best_trial(study)
        if best is None:
            raise StorageError(f"study {study.study_name!r} has no completed trial yet")
        return best
    trials = study.get_trials(deepcopy=False)
    if not 0 <= number < len(trials):
        raise StorageError(f"--trial {number}: study {study.study_name!r} has trials 0 to {len(trials) - 1}")
    return trials[number]


def cmd_evaluate(config: SearchConfig, args) -> int:
    evaluate_network(config, args)
    return 0


def evaluate_network(config: SearchConfig, args, say=functools.partial(print, flush=True)
                     ) -> tuple[list[float], list[float]]:
    """Re-trains `args.spec`, or a study's trial, on the full training set (no hold-out) once per seed; returns and
    reports the test accuracies, then (with `args.tta`) those with test-time shifts, apart; else an empty list."""
    if args.spec is not None:
        (candidate, info), label = spec_from(args.spec), str(getattr(args.spec, "name", "") or args.spec)
        if info is not None and args.dataset is None:  # the data it was trained on, unless --dataset says otherwise
            config = recorded_data(info, config)
    elif args.study is not None:
        study = stored_study(config, args.study)
        config = as_made(config, args, study)
        trial = pick_trial(study, args.trial)
        candidate, label = Candidate.from_json(trial.user_attrs["spec"]), f"{args.study} trial {trial.number}"
    else:
        raise CliError("evaluate: give a spec or a study")
    device = resolve_device(config.device)
    splits = load_data(config, device, val_size=0)
    check_fits(splits, candidate.arch.input_shape, candidate.arch.num_classes, f"{label} takes")
    say(f"evaluating {label}: {count_params(candidate.arch):,} params, {len(splits.x_train):,} {config.dataset} "
        f"training images, {config.epochs} epoch(s), {args.seeds} seed(s)")
    accs, shifted = [], []
    for seed in range(args.seeds):
        model = prepare_model(candidate, seed, device)
        result = train(model, candidate.recipe, splits, epochs=config.epochs, seed=seed, test=True, tta=args.tta)
        accs.append(result.test_acc)
        with_tta = f", with TTA {result.test_tta:.2%}" if args.tta else ""
        say(f"  seed {seed}: test {result.test_acc:.2%}{with_tta}  ({result.train_seconds:.1f} s)")
        if args.tta:
            shifted.append(result.test_tta)
    say(f"test accuracy: {_mean_std(accs)} over {len(accs)} seed(s)")
    if args.tta:
        say(f"with test-time shifts (TTA, {len(TTA_SHIFTS)}x the inference cost on the device; not the model's "
            f"figure): {_mean_std(shifted)}")
    return accs, shifted


def _mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.2%} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.2%}"


def cmd_baselines(config: SearchConfig, args) -> int:
    """Trains the reference models with their published recipes through the same trainer, and stores them, scored
    on the validation hold-out as trials are; never on the test set (`evaluate --spec R1` gives that)."""
    names = [n.strip() for n in args.only.split(",")] if args.only else list(references.all_references())
    for n in names:
        try:
            references.by_name(n)
        except KeyError as e:
            raise CliError(f"--only: {e.args[0]}") from None
    Path(config.results_dir).mkdir(parents=True, exist_ok=True)
    storage = open_storage(config.storage_url)
    study = optuna.create_study(study_name=baselines.baselines_study_name(config.dataset), storage=storage,
                                direction="maximize", load_if_exists=True, pruner=optuna.pruners.NopPruner())
    device = resolve_device(config.device)
    splits = load_data(config, device)
    store = artifact_store.writer(config, study.study_name)
    print(f"{'model':<18} {'params':>8} {'val acc':>8} {'seconds':>8}")
    for name in names:
        candidate = references.by_name(name)
        with warnings.catch_warnings():  # ask/tell on a heartbeat storage warns; baselines run in the foreground
            warnings.simplefilter("ignore", UserWarning)
            trial = study.ask()
        trial.set_user_attr("reference", name)
        record_candidate(trial, candidate, count_params(candidate.arch))
        trial.set_user_attr("train_size", len(splits.x_train))
        trial.set_user_attr("train_subset", config.train_subset)
        trial.set_user_attr("val_size", len(splits.x_val))
        model = prepare_model(candidate, config.seed, device)
        try:
            result = train(model, candidate.recipe, splits, epochs=config.epochs, seed=config.seed, test=False)
        except BaseException as e:
            trial.set_user_attr("fail_reason", f"{type(e).__name__}: {e}"[:500])
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        record_result(trial, result, model, candidate, store, config.out_dir(study.study_name) / ".scratch",
                      splits.info)
        study.tell(trial, result.val_acc)
        print(f"{candidate.name:<18} {trial.user_attrs['params']:>8,} {result.val_acc:>8.2%} "
              f"{result.train_seconds:>8.1f}", flush=True)
    print(f"stored in study {study.study_name!r}; `search.py report --study NAME` draws them on that study's frontier")
    return 0
