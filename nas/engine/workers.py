"""Worker processes: each pulls trials from the shared study until its total is reached. Threads per worker, the
parent's signals relayed to each worker, a watch on the parent, and how a worker tells the parent why it stopped."""
from __future__ import annotations

import dataclasses
import gc
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time

import optuna
import torch
from optuna.trial import TrialState

from nas.engine import artifact_store
from nas import logs
from nas.engine import liveness, study as study_mod
from nas.config import SearchConfig
from nas.data import Splits, load_data, split_fingerprint, to_device
from nas.engine.device import resolve_device
from nas.errors import SearchFailed, UserError
from nas.engine.interrupts import CTRL_C, held, shielded
from nas.engine.objective import Objective, failure_reason, reject
from nas.space.space_file import load_space
from nas.engine.retry import unreachable
from nas.engine.storage import fail_stale_trials, heartbeat_settings, open_storage, requeue_interrupted

MAX_CONSECUTIVE_REJECTIONS = 200
MAX_ERRORS_IN_A_ROW = 5  # trials failed by the same error, not by the candidate: a bug, a broken install, a full disk
WORKER_CANNOT_FIT, WORKER_FAILED, WORKER_INTERRUPTED = 3, 4, 130  # exit codes of a --jobs worker process
POLL_SECONDS = 0.5  # how often the parent passes its signals on, and a worker looks for them and for its parent


class Stopper:
    """Stops the worker when the study's trained trials, with those other workers are running, reach the total (so two
    workers train 50 trials for --trials 50, not 51), when its trial was surplus (`within_total`), when the space
    cannot fit the budget, or when this worker's last MAX_ERRORS_IN_A_ROW trials failed with the same error. A running
    trial that ends untrained (rejected, stopped) leaves its worker short of the total, so that worker trains on."""

    def __init__(self, target: int, objective: Objective):
        self.target, self.objective = target, objective
        self.space_cannot_fit = False
        self.errors: list[int] = []  # numbers of the trials in the current run of the same error
        self.last_error = ""

    def __call__(self, study: optuna.Study, trial) -> None:
        self._count_errors(trial)
        if self.objective.rejected_in_a_row >= MAX_CONSECUTIVE_REJECTIONS:
            self.space_cannot_fit = True
            study.stop()
        elif len(self.errors) >= MAX_ERRORS_IN_A_ROW:
            study.stop()
        elif study_mod.is_trained(trial) and study_mod.trained_or_running(study) >= self.target:
            study.stop()
        elif trial.user_attrs.get("rejected") == study_mod.REJECTED_SURPLUS:
            study.stop()

    def _count_errors(self, trial) -> None:
        """Errors of one type in a row (their messages may name a file or a trial). A trained trial ends the run; a
        rejection or an interruption says nothing about the error, and neither ends nor extends it."""
        reason = study_mod.error_reason(trial)
        if reason is None:
            if study_mod.is_trained(trial):
                self.errors = []
            return
        if reason.split(":")[0] != self.last_error.split(":")[0]:
            self.errors = []
        self.errors.append(trial.number)
        self.last_error = reason

    def repeated_errors(self) -> str | None:
        """Why the worker stopped, if it was for repeated errors: the error and the trials' numbers."""
        if len(self.errors) < MAX_ERRORS_IN_A_ROW:
            return None
        return (f"stopped after {len(self.errors)} trials in a row failed with the same error (trials "
                f"{', '.join(map(str, self.errors))}): {self.last_error}")


def within_total(objective: Objective, target: int):
    """`objective` for the trials the study still needs. Two workers whose trials end at the same moment may each find
    the other between trials and start one more: the later-numbered of the two is stored untrained, rejected as
    surplus, and its worker stops (Stopper) and waits for the trials before it (`_await_running`)."""
    def run(trial: optuna.Trial):
        if study_mod.claimed_before(trial.study, trial.number) >= target:
            reject(trial, study_mod.REJECTED_SURPLUS, f"not trained: the trials before it make up --trials {target}")
        return objective(trial)
    return run


def _await_running(study: optuna.Study, target: int, deadline: float | None) -> bool:
    """True when this worker should train more: the study is short of `target` trained trials, even counting those
    running. While the running trials could make up the total, waits for them: another worker's trial ends, and a
    killed worker's is failed and re-queued once its heartbeat is a grace period old, for this worker to train."""
    announced = False
    while (trained := study_mod.trained_count(study)) < target <= study_mod.trained_or_running(study):
        if deadline is not None and time.monotonic() >= deadline:
            return False
        if not announced:
            running = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
            logs.line(f"{trained} of {target} trained; waiting for trial(s) {', '.join(map(str, running))}, "
                      "running now")
            announced = True
        CTRL_C.check()
        time.sleep(POLL_SECONDS)
        fail_stale_trials(study)
    return trained < target and (deadline is None or time.monotonic() < deadline)


def settle_heap(*_) -> None:
    """An Optuna callback, after each trial: collects, then leaves every object still alive (imports, data,
    storage) out of later collections until `gc.unfreeze()`, so no full collection walks them inside a trial."""
    gc.collect()
    gc.freeze()


def run_all(config: SearchConfig, splits: Splits) -> bool:
    """Runs `config.jobs` workers until the study's total is reached; True if the space could not fit the budget.
    SearchFailed if a worker failed. `splits`, the search's data read and checked by the caller, is trained on here
    with one worker; each --jobs process reads its own. The caller handles signals with CTRL_C: on one, Interrupted
    is raised once every worker has marked its running trial."""
    threads = config.threads or max(1, (os.cpu_count() or 1) // config.jobs)
    if config.jobs == 1:
        return run_worker(config, 0, threads, splits)
    return _run_processes(config, threads)


def run_worker(config: SearchConfig, worker: int = 0, threads: int | None = None, splits: Splits | None = None
               ) -> bool:
    """One worker: pulls trials from the shared study until its total of trained trials is reached, on `splits`
    (else it reads the data itself). Returns True when it stopped because the space cannot fit the budget;
    SearchFailed when it stopped for repeated errors."""
    if threads:
        torch.set_num_threads(threads)
    # ERROR: Optuna logs every failed trial (NaN loss, Ctrl-C) with its traceback; our own line gives the reason
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logs.configure(config.quiet, f"[w{worker}] " if config.jobs > 1 else "")
    with CTRL_C.stoppable():  # nothing is written yet: a signal while the data loads stops the worker at once
        space = load_space(config.space)
        device = resolve_device(config.device)
        splits = load_data(config, device) if splits is None else to_device(splits, device)
    name = config.study_name(space)
    study = optuna.load_study(study_name=name, storage=open_storage(config.storage_url, wait=True),
                              sampler=study_mod.make_sampler(config.sampler, config.seed + worker * 1000,
                                                             config.mode, config.size_shares),
                              pruner=study_mod.make_pruner())
    study_mod.check_data(study, split_fingerprint(splits))
    objective = Objective(config, space, splits, device, artifact_store.writer(config, name),
                          config.out_dir(name) / ".scratch")
    stopper = Stopper(config.trials, objective)
    deadline = None if config.timeout is None else time.monotonic() + config.timeout
    run = liveness.beating(study, within_total(objective, config.trials), heartbeat_settings()[0])  # beats via a proxy
    try:
        while _await_running(study, config.trials, deadline):
            study.optimize(run, callbacks=[stopper, settle_heap],
                           catch=(Exception,), gc_after_trial=False,
                           timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
            if stopper.space_cannot_fit or stopper.repeated_errors():
                break
    except KeyboardInterrupt:
        if CTRL_C.presses <= 1:  # its trial, now failed, waits for any worker; a second signal stops at once
            requeue_interrupted(study, [objective.number])
        raise
    finally:
        gc.unfreeze()
    if stopper.repeated_errors():
        raise SearchFailed(stopper.repeated_errors())
    return stopper.space_cannot_fit


def _run_processes(config: SearchConfig, threads: int) -> bool:
    """The --jobs workers, each in a process. The parent's SIGINT or SIGTERM is passed on to every worker, and so is
    a stop once any worker failed: the others mark their running trial and exit, and their finished trials stay."""
    CTRL_C.check()  # a signal while the data was checked (nas.run): no worker starts
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.RawValue("i", 0)  # how many stop signals the workers act on; a worker polls it
    pipes = [ctx.Pipe(duplex=False) for _ in range(config.jobs)]  # a failed worker's last error, for the parent
    lines = ctx.Queue()  # the workers' log lines, printed by this process
    settings = dataclasses.asdict(config)  # plain values: see interrupts.shielded
    entry = (_worker_entry.__module__, _worker_entry.__name__)  # by name: see interrupts.shielded
    procs = [ctx.Process(target=shielded, args=(*entry, settings, i, threads, os.getpid(), stop, pipes[i][1], lines))
             for i in range(config.jobs)]
    printer = logs.printing(lines)
    printer.start()
    with held():
        for p in procs:
            p.start()
    try:
        while any(p.exitcode is None for p in procs):
            stop.value = max(CTRL_C.presses, int(bool(_failed(procs))))
            multiprocessing.connection.wait([p.sentinel for p in procs if p.exitcode is None], POLL_SECONDS)
    except KeyboardInterrupt:  # a second signal: the workers stop at once too
        stop.value = CTRL_C.presses
        for p in procs:
            p.join(timeout=5)
        raise
    finally:
        printer.stop()  # every line the workers sent is printed
    CTRL_C.check()  # the parent was signalled: whatever the workers did, the search was interrupted
    failed = _failed(procs)
    if failed:
        raise SearchFailed("; ".join(f"worker {i} failed: {_last_error(procs[i], pipes[i][0])}" for i in failed))
    return any(p.exitcode == WORKER_CANNOT_FIT for p in procs)


def _failed(procs) -> list[int]:
    """The workers that ended with an error, a crash or a kill. A worker exits WORKER_INTERRUPTED only when told."""
    return [i for i, p in enumerate(procs) if p.exitcode not in (None, 0, WORKER_CANNOT_FIT, WORKER_INTERRUPTED)]


def _last_error(proc, pipe) -> str:
    """What a failed worker sent before it exited, else how it ended."""
    if pipe.poll():
        return pipe.recv()
    if proc.exitcode < 0:
        return (f"killed by {signal.Signals(-proc.exitcode).name}; its running trial is failed and re-queued once "
                f"its heartbeat is {heartbeat_settings()[1]} s old, by the next run")
    return f"exited with code {proc.exitcode}"


def _worker_entry(settings: dict, worker: int, threads: int, parent: int, stop, error_pipe, lines) -> None:
    """A --jobs worker process, started through `interrupts.shielded`: stops when the parent says so, gives the
    parent its log `lines` to print, and its last error and a distinct exit code when it cannot go on."""
    CTRL_C.install(relayed=True)
    logs.forward_to(lines)
    _watch_parent(parent, stop)
    try:
        cannot_fit = run_worker(SearchConfig(**settings), worker, threads)
        CTRL_C.check()  # told to stop after the worker's last trial ended
    except KeyboardInterrupt:
        sys.exit(WORKER_INTERRUPTED)
    except Exception as e:  # noqa: BLE001 - the parent reports it; a traceback per worker would bury the cause
        e = unreachable(e) or e  # Optuna's cleanup can hide a storage outage behind its own error
        error_pipe.send(str(e) if isinstance(e, UserError) else failure_reason(e))
        sys.exit(WORKER_FAILED)
    sys.exit(WORKER_CANNOT_FIT if cannot_fit else 0)


def _watch_parent(parent: int, stop, every: float = POLL_SECONDS) -> None:
    """A thread that passes the parent's stop signals to this worker's main thread, and exits the worker when its
    parent is gone (killed, say) rather than train on unattended. Its running trial is then failed by the heartbeat
    check and re-queued, like any killed worker's."""
    def watch() -> None:
        while os.getppid() == parent:
            CTRL_C.relay(stop.value)
            time.sleep(every)
        os._exit(WORKER_FAILED)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
