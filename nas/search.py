"""One search: sample -> budget filter -> train one epoch -> score, over an Optuna study; then report and export."""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import json
import multiprocessing
import os
import shlex
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import optuna
import torch

from nas import data as data_mod
from nas import export, references, report, study as study_mod
from nas.budget import count_flops, count_params, within_budget
from nas.build import build
from nas.space import OPTIONAL, SearchSpace, load_space
from nas.spec import Candidate
from nas.train import TooSlow, train

MAX_CONSECUTIVE_REJECTIONS = 200
FINAL_STEP = 100  # intermediate values are percent of the run; the final validation accuracy is reported at 100


class SearchError(RuntimeError):
    """The search cannot go on; the message says why."""


@dataclass
class SearchConfig:
    trials: int = 50
    space: str | None = None
    max_params: int = 25_000
    study: str | None = None
    storage: str | None = None
    seed: int = 0
    jobs: int | None = None  # None: default_jobs() for the device
    timeout: float | None = None
    device: str = "auto"
    threads: int | None = None
    data_dir: str | None = None
    dataset: str = "mnist"
    sampler: str = "tpe"
    warm_start: bool = False
    epochs: int = 1
    trial_time_limit: float | None = 90.0  # seconds of training per trial, projected early; see nas.train.TooSlow
    train_subset: int | None = None
    results_dir: str = "results"
    artifact_dir: str | None = None
    quiet: bool = False

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{Path(self.results_dir).as_posix()}/nas.db"

    def study_name(self, space: SearchSpace) -> str:
        name = self.study or f"{space.name}-{self.max_params}"
        if self.study is None:
            name += "" if self.dataset == "mnist" else f"-{self.dataset}"
            name += "" if self.epochs == 1 else f"-e{self.epochs}"
            name += "" if self.train_subset is None else f"-sub{self.train_subset}"
        return name

    def out_dir(self, study_name: str) -> Path:
        return Path(self.results_dir) / study_name

    def artifacts(self, study_name: str) -> Path:
        return Path(self.artifact_dir) if self.artifact_dir else self.out_dir(study_name) / "artifacts"


def default_jobs(device: torch.device) -> int:
    """One single-threaded worker per core on a CPU, one worker on an accelerator.

    Measured on a 2-core machine: two 1-thread workers train 1.7x the steps per second of one 2-thread worker
    (small convolutions scale poorly across threads), and a 1-thread worker cannot be slowed down many times
    over by OpenMP oversubscription when something else runs on the machine.
    """
    return (os.cpu_count() or 1) if device.type == "cpu" else 1


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SearchError("--device cuda: no CUDA GPU is available here; use --device cpu or --device auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise SearchError("--device mps: Apple's MPS is not available here; use --device cpu or --device auto")
    return torch.device(name)


def load_data(config: SearchConfig, device: torch.device) -> data_mod.Splits:
    splits = data_mod.load(config.dataset, config.data_dir, train_subset=config.train_subset)
    return to_device(splits, device)


def to_device(splits: data_mod.Splits, device: torch.device) -> data_mod.Splits:
    """On CUDA the data lives on the GPU; on the CPU channels_last makes convolutions markedly faster."""
    splits = splits.to(device)
    for name in ("x_train", "x_val", "x_test"):
        setattr(splits, name, getattr(splits, name).contiguous(memory_format=torch.channels_last))
    return splits


def prepare_model(candidate: Candidate, seed: int, device: torch.device) -> torch.nn.Module:
    return build(candidate.arch, seed=seed).to(device=device, memory_format=torch.channels_last)


class Objective:
    """Turns one Optuna trial into a candidate, filters it by budget, trains it and scores it."""

    def __init__(self, config: SearchConfig, space: SearchSpace, splits, device, store, scratch: Path, tag: str = ""):
        self.config, self.space, self.splits, self.device = config, space, splits, device
        self.store, self.scratch, self.tag = store, scratch, tag
        self.rejected_in_a_row = 0
        self.log = Log(config.quiet, tag)

    def __call__(self, trial: optuna.Trial) -> float:
        with CTRL_C.trial():
            return self._run(trial)

    def _run(self, trial: optuna.Trial) -> float:
        reference = trial.user_attrs.get("reference")
        candidate = references.by_name(reference) if reference else self.space.sample(trial, self.config.max_params)
        params = count_params(candidate.arch)
        record_candidate(trial, candidate, params)
        if not within_budget(params, self.config.max_params):
            trial.set_user_attr("rejected", study_mod.REJECTED)
            self.rejected_in_a_row += 1
            self.log.trial(trial.number, f"rejected: {params:,} params >= budget {self.config.max_params:,}, not trained")
            raise optuna.TrialPruned("over budget")
        flops = count_flops(candidate.arch)
        trial.set_user_attr("flops", flops)
        if self.space.max_mflops and not reference and flops > self.space.max_mflops * 1e6:
            trial.set_user_attr("rejected", study_mod.REJECTED_FLOPS)
            self.rejected_in_a_row += 1
            self.log.trial(trial.number, f"rejected: {flops / 1e6:.1f} MFLOPs > the space's max_mflops "
                                         f"{self.space.max_mflops}, not trained")
            raise optuna.TrialPruned("over the compute ceiling")
        self.rejected_in_a_row = 0
        # a trial re-queued after its worker was killed carries the user attrs of the original: same params and
        # spec (so the same candidate), and the same seed, so the retry is the run the killed worker would have made
        seed = trial.user_attrs.get("seed", self.config.seed + trial.number)
        trial.set_user_attr("seed", seed)

        def on_progress(percent: int, acc: float) -> None:
            with CTRL_C.paused():
                trial.report(acc, percent)
                prune = trial.should_prune()
                if prune:
                    trial.set_user_attr("train_seconds", round(time.perf_counter() - started, 2))
            if prune:
                self.log.trial(trial.number, f"{params:>7,} params  pruned at {percent}% of the epoch (val {acc:.2%})")
                raise optuna.TrialPruned(f"val {acc:.4f} at {percent}%")

        started = time.perf_counter()
        try:
            with CTRL_C.training():
                model = prepare_model(candidate, seed, self.device)
                result = train(model, candidate.recipe, self.splits, epochs=self.config.epochs, seed=seed,
                               on_progress=on_progress, time_limit=None if reference else self.config.trial_time_limit)
        except optuna.TrialPruned:
            raise
        except TooSlow as e:
            trial.set_user_attr("rejected", study_mod.REJECTED_SLOW)
            trial.set_user_attr("slow_reason", str(e))
            self.rejected_in_a_row += 1
            self.log.trial(trial.number, f"{params:>7,} params  rejected as too slow: {e}, not counted")
            raise optuna.TrialPruned(str(e)) from None
        except Exception as e:  # noqa: BLE001 - NaN loss, out of memory, any other fault: fail this trial, go on
            reason = _reason(e)
            trial.set_user_attr("fail_reason", reason)
            self.log.trial(trial.number, f"{params:>7,} params  failed: {reason}")
            raise
        record_result(trial, result, model, candidate, self.store, self.scratch)
        name = f"  [{reference}]" if reference else ""
        self.log.trial(trial.number, f"{params:>7,} params  val {result.val_acc:.2%}  test {result.test_acc:.2%}  "
                                     f"{result.train_seconds:5.1f}s{name}")
        return result.val_acc


def record_candidate(trial, candidate: Candidate, params: int) -> None:
    """What every trial carries from the start, so any trial can be rebuilt without the sampler."""
    trial.set_user_attr("params", params)
    trial.set_user_attr("candidate_id", candidate.id)
    trial.set_user_attr("spec", candidate.to_json())


def record_result(trial, result, model, candidate: Candidate, store, scratch: Path) -> None:
    """A trained trial's scores, timings and weights (as an Optuna artifact)."""
    trial.report(result.val_acc, FINAL_STEP)  # the learning curve's end point, from the score already computed
    trial.set_user_attr("val_acc", result.val_acc)
    trial.set_user_attr("test_acc", result.test_acc)
    trial.set_user_attr("train_seconds", round(result.train_seconds, 2))
    trial.set_user_attr("eval_seconds", round(result.eval_seconds, 2))
    trial.set_user_attr("weights_artifact", export.upload_weights(trial, model, candidate, store, scratch))


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if isinstance(e, MemoryError) or isinstance(e, RuntimeError) and (
            "out of memory" in text.lower() or "can't allocate memory" in text.lower()):
        return f"out of memory: {text or type(e).__name__}"[:500]
    return f"{type(e).__name__}: {text}"[:500]


class CtrlC:
    """Ctrl-C during a search. The first press stops the running trial: while the network trains, KeyboardInterrupt
    goes through the objective at once, and Optuna marks the trial FAIL. Anywhere else (above all inside a storage
    write, where an exception can leave SQLite's write lock held and the next write waiting it out) the press is
    noted and takes effect at the next safe point: training resuming, the next trial starting, or the loop ending.
    So no trial is left RUNNING. A second press raises KeyboardInterrupt at once, wherever the program is."""

    def __init__(self):
        self.presses = 0
        self.is_training = False
        self._previous = None

    def install(self) -> None:
        self.presses, self.is_training = 0, False
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _on_sigint(self, signum, frame) -> None:
        self.presses += 1
        if self.presses > 1 or self.is_training:
            raise KeyboardInterrupt

    def check(self) -> None:
        """A safe point: stop here if Ctrl-C was pressed."""
        if self.presses:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def trial(self):
        self.check()
        yield

    @contextlib.contextmanager
    def training(self):
        """The network trains: nothing here writes to the storage except inside `paused()`."""
        self.check()
        self.is_training = True
        try:
            yield
        finally:
            self.is_training = False

    @contextlib.contextmanager
    def paused(self):
        """A storage write within training (a pruner reading): a press waits until it is done."""
        was, self.is_training = self.is_training, False
        try:
            yield
        finally:
            self.is_training = was
        if was:
            self.check()


CTRL_C = CtrlC()


class Log:
    def __init__(self, quiet: bool, tag: str = ""):
        self.quiet, self.tag = quiet, tag

    def trial(self, number: int, text: str) -> None:
        self.line(f"trial {number:>4}  {text}")

    def line(self, text: str) -> None:
        if not self.quiet:
            print(f"{self.tag}{text}", flush=True)


class Stopper:
    """Stops the worker when the study holds enough trained trials, or when the space cannot fit the budget."""

    def __init__(self, target: int, objective: Objective):
        self.target, self.objective = target, objective
        self.space_cannot_fit = False

    def __call__(self, study: optuna.Study, trial) -> None:
        if self.objective.rejected_in_a_row >= MAX_CONSECUTIVE_REJECTIONS:
            self.space_cannot_fit = True
            study.stop()
        elif study_mod.is_trained(trial) and study_mod.trained_count(study) >= self.target:
            study.stop()


def writable_dir(path: str | Path, flag: str) -> Path:
    """Creates `path` and proves a file can be written there, so a bad folder fails now, not after the search."""
    path = Path(path)
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise SearchError(f"{flag} {path}: cannot write there ({blocker} is a file, not a folder)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        raise SearchError(f"{flag} {path}: cannot write there ({e.strerror or type(e).__name__})") from None
    return path


def space_fingerprint(space: SearchSpace) -> str:
    # an optional key left at its default is the behaviour the file had before the key existed: leaving it out keeps
    # the fingerprint, so studies made from such files still resume
    declared = {section: {k: v for k, v in getattr(space, section).items()
                          if OPTIONAL.get(section, {}).get(k, object()) != v} for section in ("arch", "recipe")}
    text = json.dumps({**declared, "max_mflops": space.max_mflops}, sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def open_study(config: SearchConfig, space: SearchSpace) -> optuna.Study:
    """Creates the study, or resumes it after checking it was made for the same space, budget and data."""
    writable_dir(config.results_dir, "--results-dir")
    if config.artifact_dir:
        writable_dir(config.artifact_dir, "--artifact-dir")
    storage = study_mod.open_storage(config.storage_url)
    name = config.study_name(space)
    # val_size first: a study labelled with any key but val_size predates it (labels are written in this order)
    identity = {"val_size": data_mod.VAL_SIZE, "space": space.name, "space_fingerprint": space_fingerprint(space),
                "max_params": config.max_params, "dataset": config.dataset, "epochs": config.epochs,
                "train_subset": config.train_subset}
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True,
                                sampler=study_mod.make_sampler(config.sampler, config.seed), pruner=study_mod.make_pruner())
    existing = study.user_attrs
    if not existing and study.get_trials(deepcopy=False):
        raise study_mod.StudyError(f"study {name!r} already holds trials that were not made by a search "
                                   f"(e.g. `baselines`); pass a new --study name")
    if existing and "val_size" not in existing:
        existing = {**existing, "val_size": data_mod.LEGACY_VAL_SIZE}
    for key, value in identity.items():
        if key not in existing:  # a new study, or one that a worker started at the same moment is still labelling
            study.set_user_attr(key, value)
        elif existing[key] != value:
            raise study_mod.StudyError(
                f"study {name!r} was made with {key}={existing[key]!r}, not {value!r}; "
                f"pass a new --study name rather than mixing incompatible trials")
    return study


def run_worker(config: SearchConfig, worker: int = 0, threads: int | None = None) -> dict:
    """One worker process: pulls trials from the shared study until its total of trained trials is reached."""
    if threads:
        torch.set_num_threads(threads)
    # ERROR: Optuna logs every failed trial (NaN loss, Ctrl-C) with its traceback; our own line gives the reason
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = load_space(config.space)
    device = resolve_device(config.device)
    splits = load_data(config, device)
    storage = study_mod.open_storage(config.storage_url)
    name = config.study_name(space)
    study = optuna.load_study(study_name=name, storage=storage,
                              sampler=study_mod.make_sampler(config.sampler, config.seed + worker * 1000),
                              pruner=study_mod.make_pruner())
    store = export.artifact_store(config.artifacts(name))
    tag = f"[w{worker}] " if config.jobs > 1 else ""
    objective = Objective(config, space, splits, device, store, config.out_dir(name) / ".scratch", tag)
    stopper = Stopper(config.trials, objective)
    if study_mod.trained_count(study) < config.trials:
        try:
            study.optimize(objective, callbacks=[stopper, settle_heap], catch=(Exception,), timeout=config.timeout,
                           gc_after_trial=False)
        finally:
            gc.unfreeze()
    return {"space_cannot_fit": stopper.space_cannot_fit}


def settle_heap(*_) -> None:
    """An Optuna callback, after each trial: collects, then leaves every object still alive (imports, data,
    storage: ~400k) out of later collections until `gc.unfreeze()`. Measured inside R1 trials: a full collection
    walked them all for 0.1-0.2 s (2% of the trial) at moments no one chose; they outlive the trials, so there was
    nothing in them to collect.
    """
    gc.collect()
    gc.freeze()


WORKER_CANNOT_FIT, WORKER_FAILED = 3, 4


def _exit_with_parent(parent: int, every: float = 2.0) -> None:
    """A worker whose parent is gone (killed, say) exits too, rather than training on unattended. Its running
    trial is then failed by the heartbeat check and re-queued, like any killed worker's."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(WORKER_FAILED)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _worker_entry(config: SearchConfig, worker: int, threads: int, parent: int | None = None) -> None:
    """A --jobs worker process: one line on stderr and a distinct exit code when it cannot go on."""
    if parent is not None:
        _exit_with_parent(parent)
    CTRL_C.install()  # the terminal's Ctrl-C reaches every worker too
    try:
        result = run_worker(config, worker, threads)
        CTRL_C.check()  # pressed after the worker's last trial ended
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - the parent reports it; a traceback per worker would bury the cause
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"error: worker {worker}: {text}", file=sys.stderr, flush=True)
        sys.exit(WORKER_FAILED)
    sys.exit(WORKER_CANNOT_FIT if result["space_cannot_fit"] else 0)


def run(config: SearchConfig) -> dict:
    """The whole `search.py` job: search, then report, export and summarise."""
    started = time.perf_counter()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(config.space)
    smallest = space.smallest_params()
    if smallest >= config.max_params:
        raise SearchError(f"--max-params {config.max_params:,} is below the smallest network the space "
                          f"{space.path} can build ({smallest:,} params)")
    device = resolve_device(config.device)  # an unavailable --device fails here, before any study is made
    config = dataclasses.replace(config, jobs=config.jobs or default_jobs(device))
    study = open_study(config, space)
    study_mod.fail_stale_trials(study)  # a killed worker's trial: failed and re-queued, even if the total is reached
    log = Log(config.quiet)
    if config.warm_start:
        references.enqueue(study)
    done_before = study_mod.trained_count(study)
    log.line(f"study {study.study_name!r} in {study_mod.redact(config.storage_url)}: {done_before} trained trial(s) "
             f"so far, target {config.trials}; budget < {config.max_params:,} params; "
             f"{config.jobs} worker(s) on {resolve_device(config.device)}")
    cores = os.cpu_count() or 1
    threads = config.threads or max(1, cores // config.jobs)
    if config.jobs == 1:
        CTRL_C.install()
        try:
            try:
                result = run_worker(config, 0, threads)
            except KeyboardInterrupt:
                interrupted(config, study, space, started)
            if CTRL_C.presses:  # pressed after the last trial ended
                interrupted(config, study, space, started)
        finally:
            CTRL_C.uninstall()
        cannot_fit = result["space_cannot_fit"]
    else:
        # the data is checked here, once, so a bad data root is one clear error rather than one per worker
        data_mod.load(config.dataset, config.data_dir, train_subset=config.train_subset)
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=_worker_entry, args=(config, i, threads, os.getpid())) for i in range(config.jobs)]
        for p in procs:
            p.start()
        try:
            for p in procs:
                p.join()
        except KeyboardInterrupt:  # Ctrl-C reached every worker too: each marks its running trial and exits
            for p in procs:
                p.join()
            interrupted(config, study, space, started)
        cannot_fit = any(p.exitcode == WORKER_CANNOT_FIT for p in procs)
        failed = [i for i, p in enumerate(procs) if p.exitcode not in (0, WORKER_CANNOT_FIT) and p.exitcode > 0]
        if failed and len(failed) == len(procs):
            raise SearchError(f"every worker failed ({', '.join(f'worker {i}' for i in failed)}); "
                              f"see the error lines above")
        for i, p in enumerate(procs):
            if p.exitcode is not None and p.exitcode < 0:
                log.line(f"worker {i} was killed by signal {-p.exitcode}; its trial is failed and re-queued once its "
                         f"heartbeat is {study_mod.heartbeat_settings()[1]} s old, at the next trial or run")
    summary = finish(config, study, space, time.perf_counter() - started)
    if cannot_fit:
        raise SearchError(f"{MAX_CONSECUTIVE_REJECTIONS} candidates in a row were over the budget of "
                          f"{config.max_params:,}: the space {space.path} cannot fit it; raise --max-params or "
                          f"narrow the widths/depth in the space file")
    return summary


def interrupted(config: SearchConfig, study: optuna.Study, space: SearchSpace, started: float) -> NoReturn:
    """After the first Ctrl-C: Optuna has already marked the running trial FAIL (with no `fail_reason`, so a
    resumed search retries it); write the reports from the finished trials, then exit 130 via KeyboardInterrupt.
    A second Ctrl-C meanwhile raises KeyboardInterrupt here and stops at once; result files are written
    atomically, so none is left half-written."""
    print("\ninterrupted: writing the reports from the finished trials (Ctrl-C again to stop at once)",
          file=sys.stderr, flush=True)
    finish(config, study, space, time.perf_counter() - started)
    raise KeyboardInterrupt


def finish(config: SearchConfig, study: optuna.Study, space: SearchSpace, seconds: float) -> dict:
    """Writes the reports, exports the best model and prints the summary."""
    log = Log(config.quiet)
    name = study.study_name
    out_dir = config.out_dir(name)
    study_mod.fail_stale_trials(study)
    paths = write_all(study, config, out_dir)
    df = report.trials_frame(study)
    counts = df["state"].value_counts().to_dict()
    rejected = df["rejected"].value_counts()
    log.line("")
    log.line(f"done in {seconds:.0f} s: {study_mod.trained_count(study)} trained trial(s); rejected, not counted: "
             f"{rejected.get(study_mod.REJECTED, 0)} over the param budget (never trained), "
             f"{rejected.get(study_mod.REJECTED_FLOPS, 0)} over the compute ceiling (never trained), "
             f"{rejected.get(study_mod.REJECTED_SLOW, 0)} too slow (stopped after 50 steps); "
             f"{counts.get('FAIL', 0)} failed")
    frontier = report.pareto_frontier(df)
    if len(frontier):
        log.line("Pareto frontier (params, val acc, test acc):")
        for _, row in frontier.iterrows():
            log.line(f"  trial {int(row['number']):>4}  {int(row['params']):>7,}  {row['val_acc']:.2%}  {row['test_acc']:.2%}")
    best = study_mod.best_trial(study)
    if best is not None:
        log.line(f"best: trial {best.number}, {best.user_attrs['params']:,} params, val {best.value:.2%}, "
                 f"test {best.user_attrs['test_acc']:.2%} -> {paths.get('best')}")
    else:
        failed = df[df["fail_reason"].notna()]["fail_reason"].value_counts()
        log.line("no trial completed." + ("" if failed.empty else " Failures: " + "; ".join(
            f"{n}x {reason}" for reason, n in failed.items())))
    log.line(f"results: {out_dir}/ (trials.csv, frontier.csv, frontier.html, best.safetensors, best.json)")
    log.line(f"dashboard: {dashboard_command(config, name)}")
    return {"study": name, "best": best.number if best else None, "paths": paths}


def write_all(study: optuna.Study, config: SearchConfig, out_dir: Path) -> dict[str, Path]:
    identity = study.user_attrs
    baselines = references.baseline_frame(study._storage, config.dataset,
                                          identity.get("val_size", data_mod.LEGACY_VAL_SIZE), identity.get("train_subset"))
    max_params = study.user_attrs.get("max_params", config.max_params)
    paths = report.write_reports(study, out_dir, max_params, baselines)
    best = study_mod.best_trial(study)
    if best is not None and best.user_attrs.get("weights_artifact"):
        store = export.artifact_store(config.artifacts(study.study_name))
        paths["best"] = export.export_trial(best, store, out_dir / "best.safetensors")
    return paths


def dashboard_command(config: SearchConfig, study_name: str) -> str:
    """The exact command that opens this storage, weights included, in optuna-dashboard (run from the same folder)."""
    url = study_mod.sqlalchemy_url(config.storage_url)  # the dashboard lacks psycopg2 too: name the psycopg 3 driver
    return shlex.join(["optuna-dashboard", url, "--artifact-dir", str(config.artifacts(study_name))])


def config_from(args: dict) -> SearchConfig:
    fields = {f.name for f in dataclasses.fields(SearchConfig)}
    return SearchConfig(**{k: v for k, v in args.items() if k in fields})


