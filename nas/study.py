"""Optuna plumbing: storage, study, sampler, pruner and the rules for counting trials."""
from __future__ import annotations

import warnings

import optuna
from optuna.trial import FrozenTrial, TrialState

DEFAULT_STORAGE = "sqlite:///results/nas.db"
HEARTBEAT_SECONDS = 15
GRACE_SECONDS = 60  # a trial whose worker stopped beating this long ago is failed and re-queued
REJECTED = "over_budget"


class StudyError(RuntimeError):
    """The storage or the study cannot be used as asked; the message says why."""


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An RDB storage with heartbeats, so a killed worker's trial is failed and retried, not stuck RUNNING."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]  # psycopg 3, not SQLAlchemy's psycopg2 default
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return optuna.storages.RDBStorage(
                url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2),
            )
        except Exception as e:  # noqa: BLE001 - SQLAlchemy and driver errors vary; the user needs the reason
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise StudyError(f"cannot open storage {redact(url)}: {reason}") from None


def redact(url: str) -> str:
    """The URL with any password hidden, for messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


def make_sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # multivariate + group suit the conditional space; constant_liar keeps parallel workers apart
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                          n_startup_trials=10)


def make_pruner() -> optuna.pruners.BasePruner:
    # within-epoch readings at 20..80%: stop a trial below the median of earlier trials at the same point
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)


def is_trained(trial: FrozenTrial) -> bool:
    """Whether a trial counts toward --trials: it ran training and ended by itself.

    Budget rejections were never trained. Trials failed from outside (a killed worker, Ctrl-C) carry no
    `fail_reason`; they are retried, so counting them would lose a trial.
    """
    if trial.state == TrialState.COMPLETE:
        return True
    if trial.state == TrialState.PRUNED:
        return trial.user_attrs.get("rejected") != REJECTED
    return trial.state == TrialState.FAIL and "fail_reason" in trial.user_attrs


def trained_count(study: optuna.Study) -> int:
    return sum(is_trained(t) for t in study.get_trials(deepcopy=False))


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """Highest validation accuracy; fewer params breaks ties."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    if not done:
        return None
    return max(done, key=lambda t: (t.value, -t.user_attrs.get("params", 0)))


def load_study(storage, name: str) -> optuna.Study:
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = sorted(optuna.get_all_study_names(storage))
        raise StudyError(f"no study named {name!r} in this storage; studies here: {', '.join(names) or 'none'}") from None
