"""One trial: sample a candidate, filter it by budget, train it, score it and record what it did."""
from __future__ import annotations

import os
import time
from pathlib import Path

import optuna

from nas.deploy import export
from nas import logs
from nas.engine import pace
from nas.space import references
from nas.engine import study as study_mod
from nas.space.budget import count_params
from nas.engine.ceilings import Ceilings
from nas.config import SearchConfig
from nas.data import DataInfo
from nas.engine.device import prepare_model
from nas.engine.interrupts import CTRL_C
from nas.space.space import SearchSpace
from nas.space.spec import Candidate
from nas.engine.train import TooSlow, TrainingDiverged, train

OUT_OF_MEMORY = "out of memory: "  # how an out-of-memory error's `fail_reason` starts
WORKER_KEY = "worker"  # user attr: HOST:PID of the process that trains the trial
FINAL_STEP = 100  # intermediate values are percent of the run; the final validation accuracy is reported at 100


class Objective:
    """Turns one Optuna trial into a candidate, filters it by budget, trains it and scores it."""

    def __init__(self, config: SearchConfig, space: SearchSpace, splits, device, store, scratch: Path):
        self.config, self.space, self.splits, self.device = config, space, splits, device
        self.store, self.scratch = store, scratch
        self.ceilings = Ceilings.of(config, space, getattr(splits, "info", None))
        self.rejected_in_a_row = 0
        self.params = None  # the running trial's, for its failure line
        self.number = -1  # the running (or last) trial's

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        self.number = trial.number
        with CTRL_C.trial():
            self.params = None
            try:
                return self._run(trial)
            except optuna.TrialPruned:
                raise
            except Exception as e:  # noqa: BLE001 - NaN loss, out of memory, any other fault: fail this trial, go on
                self._fail(trial, e)
                raise

    def _run(self, trial: optuna.Trial) -> float:
        reference = trial.user_attrs.get("reference")
        info = self.splits.info
        candidate = (references.by_name(reference) if reference else
                     self.space.sample(trial, self.config.max_params, info.shape, len(info.classes),
                                       self.ceilings.fits_devices, auto_by_size=self.config.mode.pareto))
        params = self.params = count_params(candidate.arch)
        record_candidate(trial, candidate, params)
        arch = candidate.arch
        if reference and (arch.input_shape, arch.num_classes) != (info.shape, len(info.classes)):
            self._reject(trial, study_mod.REJECTED_DATA, f"rejected: {reference} is built for "
                         f"{'x'.join(map(str, arch.input_shape))} images and {arch.num_classes} classes, not this "
                         f"data's, not trained")
        self._filter(trial, candidate, exempt=bool(reference))
        # a trial re-queued after its worker was killed carries the user attrs of the original: the same candidate
        # and the same seed, so the retry is the run the killed worker would have made
        seed = trial.user_attrs.get("seed", self.config.seed + trial.number)
        trial.set_user_attr("seed", seed)
        trial.set_user_attr(WORKER_KEY, f"{pace.this_host()}:{os.getpid()}")
        started = time.perf_counter()

        def on_progress(percent: int, acc: float) -> None:
            with CTRL_C.paused():
                prune = self._reading(trial, percent, acc)
                if prune:
                    trial.set_user_attr("train_seconds", round(time.perf_counter() - started, 2))
            if prune:
                logs.trial_line(trial.number, f"{params:>7,} params  pruned at {percent}% of the epoch (val {acc:.2%})")
                raise optuna.TrialPruned(f"val {acc:.4f} at {percent}%")

        host = pace.this_host()
        limit, why = pace.time_limit(trial.study, trial.number, self.config.trial_time_limit, host,
                                     params if self.config.mode.pareto else None)

        def on_pace(projected: float) -> None:
            with CTRL_C.paused():
                trial.set_user_attr(pace.KEY, round(projected, 1))
                trial.set_user_attr(pace.HOST_KEY, host)
            pace.check(projected, limit, why)

        try:
            with CTRL_C.stoppable():
                model = prepare_model(candidate, seed, self.device)
                result = train(model, candidate.recipe, self.splits, epochs=self.config.epochs, seed=seed,
                               on_progress=on_progress, on_pace=None if reference else on_pace, test=False)
        except TooSlow as e:
            trial.set_user_attr("slow_reason", str(e))
            self._reject(trial, study_mod.REJECTED_SLOW, f"{params:>7,} params  rejected as too slow: {e}, not counted")
        record_result(trial, result, model, candidate, self.store, self.scratch, info)
        name = f"  [{reference}]" if reference else ""
        logs.trial_line(trial.number, f"{params:>7,} params  val {result.val_acc:.2%}  "
                                      f"{result.train_seconds:5.1f}s{name}")
        return self.config.mode.values(result.val_acc, trial.user_attrs)

    def _reading(self, trial: optuna.Trial, percent: int, acc: float) -> bool:
        """Records a within-epoch reading; whether to prune the trial there. Pareto mode: as a user attr, judged
        by study.pareto_should_prune (Optuna's pruners and Trial.report are single-objective)."""
        mode = self.config.mode
        if not mode.pareto:
            trial.report(acc, percent)
            return trial.should_prune()
        trial.set_user_attr(study_mod.readings_key(percent), acc)
        return study_mod.pareto_should_prune(trial.study, trial.number, percent, acc, trial.user_attrs[mode.size_attr],
                                             mode.size_attr)

    def _fail(self, trial: optuna.Trial, e: Exception) -> None:
        """Records why the trial failed, and whether its candidate caused it: only then does it count as trained."""
        reason = failure_reason(e)
        own = isinstance(e, TrainingDiverged) or reason.startswith(OUT_OF_MEMORY)
        # the kind first: a trial cut off between the two writes then has a kind only, and is not counted
        trial.set_user_attr("fail_kind", study_mod.FAILED_BY_CANDIDATE if own else study_mod.FAILED_BY_ERROR)
        trial.set_user_attr("fail_reason", reason)
        params = "" if self.params is None else f"{self.params:>7,} params  "
        logs.trial_line(trial.number, f"{params}failed: {reason}" + ("" if own else " (an error, not counted)"))

    def _filter(self, trial: optuna.Trial, candidate: Candidate, exempt: bool) -> None:
        """Records the candidate's device figures, then rejects it, before any training, if it is over the param
        budget or a device ceiling. Warm-start references (`exempt`) answer to the param budget only."""
        for key, value in self.ceilings.figures(candidate.arch).items():
            trial.set_user_attr(key, value)
        breach = self.ceilings.breach(candidate.arch, devices=not exempt)
        if breach:
            self._reject(trial, breach.limit.reason, f"rejected: {breach}, not trained")
        self.rejected_in_a_row = 0

    def _reject(self, trial: optuna.Trial, why: str, text: str):
        self.rejected_in_a_row += 1
        reject(trial, why, text)


def reject(trial: optuna.Trial, why: str, text: str):
    """Stores the trial as PRUNED with `rejected=why`: shown in the dashboard, not counted toward --trials."""
    trial.set_user_attr("rejected", why)
    logs.trial_line(trial.number, text)
    raise optuna.TrialPruned(why) from None


def record_candidate(trial, candidate: Candidate, params: int) -> None:
    """What every trial carries from the start, so any trial can be rebuilt without the sampler."""
    trial.set_user_attr("params", params)
    trial.set_user_attr("candidate_id", candidate.id)
    trial.set_user_attr("spec", candidate.to_json())


def record_result(trial, result, model, candidate: Candidate, store, scratch: Path,
                  data: DataInfo | None = None) -> None:
    """A trained trial's validation score, timings and weights (as an Optuna artifact, recording `data`, what it
    trained on). No test score: only the trials a report shows are scored on the test set, from these weights."""
    if study_mod.is_multi_objective(trial.study):  # the end point of a pareto trial's readings (see Objective._reading)
        trial.set_user_attr(study_mod.readings_key(FINAL_STEP), result.val_acc)
    else:
        trial.report(result.val_acc, FINAL_STEP)  # the learning curve's end point, from the score already computed
    trial.set_user_attr("val_acc", result.val_acc)
    trial.set_user_attr("train_seconds", round(result.train_seconds, 2))
    trial.set_user_attr("eval_seconds", round(result.eval_seconds, 2))
    trial.set_user_attr("weights_store", store.location)  # where any machine finds them (nas.engine.artifact_store)
    trial.set_user_attr("weights_host", pace.this_host())  # the machine that stored them, for a folder
    trial.set_user_attr("weights_artifact", export.upload_weights(trial, model, candidate, store, scratch, data))


def failure_reason(e: BaseException) -> str:
    """One line for `fail_reason`: out-of-memory errors say so first, others give their type and first line."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if isinstance(e, MemoryError) or isinstance(e, RuntimeError) and (
            "out of memory" in text.lower() or "can't allocate memory" in text.lower()):
        return f"{OUT_OF_MEMORY}{text or type(e).__name__}"[:500]
    return f"{type(e).__name__}: {text}"[:500]
