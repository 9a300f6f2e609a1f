"""The Optuna study: creating or resuming it, its sampler and pruner, and the rules for counting trials."""
from __future__ import annotations

import math
import statistics
import warnings

import numpy
import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.config import Mode
from nas.space import references
from nas.errors import StorageError

REJECTED = "over_budget"
REJECTED_FLOPS = "over_flops"  # over --max-mflops, else the space's max_mflops; never trained either
REJECTED_MEMORY = "over_peak_memory"  # over --max-peak-kb (peak activation memory of one image); never trained
REJECTED_LATENCY = "over_latency"  # over --max-latency-ms (onnxruntime, batch 1, one thread); never trained
REJECTED_ARENA = "over_arena"  # over --max-arena-kb (TFLM's arena for the int8 model, predicted); never trained
REJECTED_FLASH = "over_flash"  # over --max-flash-kb (the int8 .tflite file, predicted); never trained
REJECTED_TFLM = "no_tflm_kernel"  # a layer TFLM has no int8 kernel for, under those ceilings; never trained
REJECTED_DATA = "other_data"  # a reference network (--warm-start) built for another input shape or class count
REJECTED_SLOW = "too_slow"  # projected over --trial-time-limit after its first steps; stopped there, not counted
REJECTED_SURPLUS = "surplus"  # started when the trials before it could already make up --trials; never trained


class _SeededPerTrial(optuna.samplers.BaseSampler):
    """Proposes each trial with a fresh sampler of its kind, seeded from (seed, trial number).

    Trial numbers are unique across every worker of a study, so processes that run the same command with the same
    --seed (on several machines) still propose different candidates, while a one-worker run stays reproducible.
    Without a seed, one unseeded sampler proposes every trial.
    """

    def __init__(self, kind: type[optuna.samplers.BaseSampler], seed: int | None = None, **kwargs):
        self._kind, self._kwargs, self._nas_seed = kind, kwargs, seed
        self._sampler = self._made(seed)

    def _made(self, seed: int | None) -> optuna.samplers.BaseSampler:
        """A sampler of this kind with its arguments and `seed` (Optuna's experimental arguments do not warn)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return self._kind(seed=seed, **self._kwargs)

    def trial_seed(self, number: int) -> int | None:
        """Trial `number`'s seed: the same for the same --seed and number, whatever ran before."""
        return None if self._nas_seed is None else (self._nas_seed * 1_000_003 + number) % 2**32

    def before_trial(self, study, trial: FrozenTrial) -> None:
        if self._nas_seed is not None:
            self._sampler = self._made(self.trial_seed(trial.number))
        self._sampler.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial: FrozenTrial) -> dict:
        return self._sampler.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial: FrozenTrial, search_space: dict) -> dict:
        return self._sampler.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial: FrozenTrial, name: str, distribution):
        return self._sampler.sample_independent(study, trial, name, distribution)

    def after_trial(self, study, trial: FrozenTrial, state: TrialState, values) -> None:
        self._sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._sampler.reseed_rng()


class SeededRandomSampler(_SeededPerTrial):
    def __init__(self, seed: int | None = None):
        super().__init__(optuna.samplers.RandomSampler, seed)


class SeededTPESampler(_SeededPerTrial):
    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(optuna.samplers.TPESampler, seed, **kwargs)


SIZE_SHARE = "budget_fill"  # the share of the ceiling a candidate's widths are fitted to (nas.space.space)


class _SizeBands:
    """The pareto mode: trial n draws its size share log-uniform within band n mod len(edges), so each band gets an
    equal share of the trials however the sampler's model drifts; the sampler chooses everything else. Band k runs
    from edge k-1 (the declared range's low end for the first) to edge k (SearchConfig.size_shares). The draw within
    the band comes from a generator of its own, seeded per trial."""

    def __init__(self, *args, edges: tuple[float, ...] = (1.0,), **kwargs):
        self.edges = edges
        super().__init__(*args, **kwargs)

    def before_trial(self, study, trial: FrozenTrial) -> None:
        seed = self.trial_seed(trial.number)
        self._band_rng = numpy.random.default_rng(None if seed is None else (seed, 1))  # a stream of its own
        super().before_trial(study, trial)

    def infer_relative_search_space(self, study, trial: FrozenTrial) -> dict:
        space = super().infer_relative_search_space(study, trial)
        space.pop(SIZE_SHARE, None)
        return space

    def sample_independent(self, study, trial: FrozenTrial, name: str, distribution):
        if name != SIZE_SHARE or not isinstance(distribution, optuna.distributions.FloatDistribution):
            return super().sample_independent(study, trial, name, distribution)
        band = trial.number % len(self.edges)
        low = max(distribution.low, self.edges[band - 1] if band else 0.0)
        high = max(low, min(distribution.high, self.edges[band]))
        share = math.exp(math.log(low) + self._band_rng.uniform() * (math.log(high) - math.log(low)))
        return min(max(share, low), high)  # exp(log(x)) may round past an edge


class BandedRandomSampler(_SizeBands, SeededRandomSampler):
    pass


class BandedTPESampler(_SizeBands, SeededTPESampler):
    pass


def make_sampler(name: str, seed: int | None, mode: Mode = Mode(), size_shares: tuple[float, ...] = (1.0,)
                 ) -> optuna.samplers.BaseSampler:
    """The named sampler, seeded; in pareto mode, one that spreads the trials over the size bands ending at
    `size_shares` of the ceiling (_SizeBands)."""
    bands = {"edges": size_shares} if mode.pareto else {}
    if name == "random":
        return (BandedRandomSampler if mode.pareto else SeededRandomSampler)(seed=seed, **bands)
    # multivariate + group suit the conditional space; constant_liar keeps parallel workers apart
    return (BandedTPESampler if mode.pareto else SeededTPESampler)(
        seed=seed, multivariate=True, group=True, constant_liar=True, n_startup_trials=10, **bands)


PRUNE_UNTIL = 40  # percent of the epoch: the last reading at which a trial may be pruned


class EarlyPruner(optuna.pruners.BasePruner):
    """Prunes at the within-epoch readings up to PRUNE_UNTIL percent only: early is where stopping saves most of a
    trial's cost; later it saves little and throws away nearly finished results (evidence: bench/RESULTS.md)."""

    def __init__(self, inner: optuna.pruners.BasePruner, until: int = PRUNE_UNTIL):
        self.inner, self.until = inner, until

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        return step is not None and step <= self.until and self.inner.prune(study, trial)


def make_pruner() -> optuna.pruners.BasePruner:
    """Below the median of earlier completed trials at the same reading (20% or 40% of the epoch): stopped."""
    return EarlyPruner(optuna.pruners.MedianPruner(n_startup_trials=8, n_warmup_steps=0))


SIMILAR_SIZE = 2.0  # pareto pruning compares a trial with earlier trials within this factor of its size
MIN_PEERS = 5  # pareto pruning: earlier readings of similar-size trials needed before any trial is stopped


def readings_key(percent: int) -> str:
    """The user attr holding a pareto-mode trial's validation accuracy at `percent` of its run (Optuna's
    Trial.report is single-objective only)."""
    return f"val_at_{percent}"


def pareto_should_prune(study: optuna.Study, number: int, percent: int, acc: float, size: float, size_attr: str
                        ) -> bool:
    """The pareto mode's pruning: stopped if below the median reading, at the same point, of earlier completed
    trials within SIMILAR_SIZE of its size (in user attr `size_attr`), up to PRUNE_UNTIL percent. Completed only, as
    the default mode's MedianPruner: pruned trials' readings would pull the median down."""
    if percent > PRUNE_UNTIL:
        return False
    key = readings_key(percent)
    peers = [t.user_attrs[key] for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
             if t.number < number and key in t.user_attrs and t.user_attrs.get(size_attr)
             and 1 / SIMILAR_SIZE <= t.user_attrs[size_attr] / size <= SIMILAR_SIZE] if size > 0 else []
    return len(peers) >= MIN_PEERS and acc < statistics.median(peers)


def is_multi_objective(study: optuna.Study) -> bool:
    return len(study.directions) > 1


FAILED_BY_ERROR = "error"  # `fail_kind` of a trial failed by anything but its candidate: a bug, an install, a disk
FAILED_BY_CANDIDATE = "candidate"  # `fail_kind` of a trial whose loss diverged or that ran out of memory


def is_trained(trial: FrozenTrial) -> bool:
    """Whether a trial counts toward --trials: it ran training and ended by itself.

    Rejections (over budget, over a device ceiling, too slow) were never trained. Trials failed from outside
    (a killed worker, Ctrl-C) carry no `fail_reason`; they are retried, so counting them would lose a trial. A failure
    counts only if the candidate caused it; trials stored before `fail_kind` existed count as they did.
    """
    if trial.state == TrialState.COMPLETE:
        return True
    if trial.state == TrialState.PRUNED:
        return "rejected" not in trial.user_attrs
    return (trial.state == TrialState.FAIL and "fail_reason" in trial.user_attrs
            and trial.user_attrs.get("fail_kind") != FAILED_BY_ERROR)


def error_reason(trial: FrozenTrial) -> str | None:
    """The `fail_reason` of a trial failed by an error rather than its candidate; None for any other trial."""
    if trial.state == TrialState.FAIL and trial.user_attrs.get("fail_kind") == FAILED_BY_ERROR:
        return trial.user_attrs.get("fail_reason", "")
    return None


def trained_count(study: optuna.Study) -> int:
    return sum(is_trained(t) for t in study.get_trials(deepcopy=False))


def trained_or_running(study: optuna.Study) -> int:
    """Trained trials and those running now: the most the study will hold once they end. A killed
    worker's trial stays RUNNING until its heartbeat goes stale (nas.engine.storage), then is failed and retried."""
    return sum(is_trained(t) or t.state == TrialState.RUNNING for t in study.get_trials(deepcopy=False))


def claimed_before(study: optuna.Study, number: int) -> int:
    """Trials numbered below `number` that are trained, running or waiting to run: a trial that starts with these
    at the total is surplus. Trial numbers are given out in order, so of two trials started at once only the later
    one finds the other among its predecessors."""
    return sum(is_trained(t) or t.state in (TrialState.RUNNING, TrialState.WAITING)
               for t in study.get_trials(deepcopy=False) if t.number < number)


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """Highest validation accuracy (the first objective, in either mode); fewer params breaks ties."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.values]
    if not done:
        return None
    return max(done, key=lambda t: (t.values[0], -t.user_attrs.get("params", 0)))


def load_study(storage, name: str) -> optuna.Study:
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = sorted(optuna.get_all_study_names(storage))
        raise StorageError(f"no study named {name!r} in this storage; studies here: {', '.join(names) or 'none'}") from None


DATA_KEY = "data_fingerprint"  # nas.data.split_fingerprint of the data the study's trials trained on


def check_data(study: optuna.Study, fingerprint: str) -> None:
    """Labels the study with its data's fingerprint, or refuses other data: an image folder or npz file changed
    since the study was made would score its trials on another hold-out. A study made before the label is labelled."""
    made = study.user_attrs.get(DATA_KEY)
    if made is None:
        study.set_user_attr(DATA_KEY, fingerprint)
    elif made != fingerprint:
        raise StorageError(f"study {study.study_name!r} was made from other data: "
                         f"{study.user_attrs.get('data_source', 'its data')} has gained, lost or relabelled images "
                         f"since; pass a new --study name rather than scoring trials on two hold-outs")


def create_or_resume(storage, name: str, identity: dict, sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    """Creates the study labelled with `identity`, or resumes it after checking it was made with the same. A pareto
    `identity` makes a two-objective study: validation accuracy (maximised) and its size metric (minimised)."""
    mode = Mode.of_study(identity)
    study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True, sampler=sampler,
                                directions=mode.directions, pruner=make_pruner())
    if is_multi_objective(study) != mode.pareto:  # the other mode's study: its labels alone would not say so
        raise StorageError(f"study {name!r} was made {'without' if mode.pareto else 'with'} --objective pareto; "
                         f"pass a new --study name")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if mode.pareto and not study.metric_names:
            study.set_metric_names(["val_acc", mode.size])  # the dashboard's axis names
    existing = study.user_attrs
    if not existing and study.get_trials(deepcopy=False):
        raise StorageError(f"study {name!r} already holds trials that were not made by a search "
                         f"(e.g. `baselines`); pass a new --study name")
    for key, value in identity.items():
        if key not in existing:  # a new study, or one that a worker started at the same moment is still labelling
            study.set_user_attr(key, value)
        elif existing[key] != value:
            raise StorageError(f"study {name!r} was made with {key}={existing[key]!r}, not {value!r}; "
                             f"pass a new --study name rather than mixing incompatible trials")
    return study


def enqueue_references(study: optuna.Study) -> list[str]:
    """Queues each reference model once as a trial of the study (skipped where already queued or run)."""
    seen = {t.user_attrs.get("reference") for t in study.get_trials(deepcopy=False)}
    queued = []
    for name in references.all_references():
        if name not in seen:
            study.enqueue_trial({}, user_attrs={"reference": name})
            queued.append(name)
    return queued
