"""Worker processes: each pulls trials from the shared study until its total is reached. Threads per worker,
Ctrl-C in each, a watch on the parent, and the exit codes through which a worker tells the parent why it stopped."""
from __future__ import annotations

import gc
import multiprocessing
import os
import sys
import threading
import time

import optuna
import torch

from nas import data, export, logs
from nas import study as study_mod
from nas.config import SearchConfig
from nas.device import load_data, resolve_device
from nas.errors import SearchError
from nas.interrupts import CTRL_C
from nas.objective import Objective
from nas.space import load_space
from nas.storage import heartbeat_settings, open_storage

MAX_CONSECUTIVE_REJECTIONS = 200
WORKER_CANNOT_FIT, WORKER_FAILED = 3, 4  # exit codes of a --jobs worker process


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


def settle_heap(*_) -> None:
    """An Optuna callback, after each trial: collects, then leaves every object still alive (imports, data,
    storage) out of later collections until `gc.unfreeze()`, so no full collection walks them inside a trial."""
    gc.collect()
    gc.freeze()


def run_all(config: SearchConfig) -> bool:
    """Runs `config.jobs` workers until the study's total is reached; True if the space could not fit the budget.
    Ctrl-C raises KeyboardInterrupt once every worker has marked its running trial."""
    threads = config.threads or max(1, (os.cpu_count() or 1) // config.jobs)
    if config.jobs == 1:
        CTRL_C.install()
        try:
            cannot_fit = run_worker(config, 0, threads)
            CTRL_C.check()  # pressed after the last trial ended
        finally:
            CTRL_C.uninstall()
        return cannot_fit
    return _run_processes(config, threads)


def run_worker(config: SearchConfig, worker: int = 0, threads: int | None = None) -> bool:
    """One worker: pulls trials from the shared study until its total of trained trials is reached. Returns True
    when it stopped because the space cannot fit the budget."""
    if threads:
        torch.set_num_threads(threads)
    # ERROR: Optuna logs every failed trial (NaN loss, Ctrl-C) with its traceback; our own line gives the reason
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logs.configure(config.quiet, f"[w{worker}] " if config.jobs > 1 else "")
    space = load_space(config.space)
    device = resolve_device(config.device)
    splits = load_data(config, device)
    name = config.study_name(space)
    study = optuna.load_study(study_name=name, storage=open_storage(config.storage_url),
                              sampler=study_mod.make_sampler(config.sampler, config.seed + worker * 1000),
                              pruner=study_mod.make_pruner())
    objective = Objective(config, space, splits, device, export.artifact_store(config.artifacts(name)),
                          config.out_dir(name) / ".scratch")
    stopper = Stopper(config.trials, objective)
    if study_mod.trained_count(study) < config.trials:
        try:
            study.optimize(objective, callbacks=[stopper, settle_heap], catch=(Exception,), timeout=config.timeout,
                           gc_after_trial=False)
        finally:
            gc.unfreeze()
    return stopper.space_cannot_fit


def _run_processes(config: SearchConfig, threads: int) -> bool:
    # the data is checked here, once, so a bad data root is one clear error rather than one per worker
    data.load(config.dataset, config.data_dir, train_subset=config.train_subset)
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
        raise
    failed = [i for i, p in enumerate(procs) if p.exitcode not in (0, WORKER_CANNOT_FIT) and p.exitcode > 0]
    if failed and len(failed) == len(procs):
        raise SearchError(f"every worker failed ({', '.join(f'worker {i}' for i in failed)}); "
                          f"see the error lines above")
    for i, p in enumerate(procs):
        if p.exitcode is not None and p.exitcode < 0:
            logs.line(f"worker {i} was killed by signal {-p.exitcode}; its trial is failed and re-queued once its "
                      f"heartbeat is {heartbeat_settings()[1]} s old, at the next trial or run")
    return any(p.exitcode == WORKER_CANNOT_FIT for p in procs)


def _worker_entry(config: SearchConfig, worker: int, threads: int, parent: int | None = None) -> None:
    """A --jobs worker process: one line on stderr and a distinct exit code when it cannot go on."""
    if parent is not None:
        _exit_with_parent(parent)
    CTRL_C.install()  # the terminal's Ctrl-C reaches every worker too
    try:
        cannot_fit = run_worker(config, worker, threads)
        CTRL_C.check()  # pressed after the worker's last trial ended
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - the parent reports it; a traceback per worker would bury the cause
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"error: worker {worker}: {text}", file=sys.stderr, flush=True)
        sys.exit(WORKER_FAILED)
    sys.exit(WORKER_CANNOT_FIT if cannot_fit else 0)


def _exit_with_parent(parent: int, every: float = 2.0) -> None:
    """A worker whose parent is gone (killed, say) exits too, rather than training on unattended. Its running
    trial is then failed by the heartbeat check and re-queued, like any killed worker's."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(WORKER_FAILED)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
