"""The Optuna study: creating or resuming it, sampler seeding, the pruner, and the rules for counting trials."""
import optuna
import pytest
from optuna.trial import TrialState

from nas.config import Mode
from nas.errors import StorageError
from nas.engine import optuna_internals as internals
from nas.engine.study import SIZE_SHARE, FAILED_BY_CANDIDATE, FAILED_BY_ERROR, PRUNE_UNTIL, REJECTED, best_trial, create_or_resume, error_reason, is_trained, load_study, make_pruner, make_sampler, trained_count

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _finished(study, state, value=None, **attrs):
    trial = study.ask()
    for key, v in attrs.items():
        trial.set_user_attr(key, v)
    study.tell(trial, value, state=state) if state == TrialState.COMPLETE else study.tell(trial, state=state)


def test_only_trials_that_trained_and_ended_by_themselves_count():
    study = optuna.create_study()
    _finished(study, TrialState.COMPLETE, 0.9)
    _finished(study, TrialState.PRUNED)  # pruned by the pruner after training a while: counted
    _finished(study, TrialState.PRUNED, rejected=REJECTED)  # never trained
    # the candidate's own fault: a NaN loss, out of memory
    _finished(study, TrialState.FAIL, fail_reason="TrainingDiverged: loss became nan", fail_kind=FAILED_BY_CANDIDATE)
    _finished(study, TrialState.FAIL, fail_reason="OSError: [Errno 28] No space left on device",
              fail_kind=FAILED_BY_ERROR)  # not the candidate's: a bug, a broken install, a full disk
    _finished(study, TrialState.FAIL)  # failed from outside (killed worker, Ctrl-C): retried, so not counted
    _finished(study, TrialState.FAIL, fail_reason="out of memory: x")  # stored before fail_kind: counted as it was
    assert [is_trained(t) for t in study.trials] == [True, True, False, True, False, False, True]
    assert trained_count(study) == 4
    assert [error_reason(t) for t in study.trials[3:5]] == [None, "OSError: [Errno 28] No space left on device"]


def test_best_is_the_highest_validation_accuracy_and_fewer_params_break_ties():
    study = optuna.create_study(direction="maximize")
    assert best_trial(study) is None
    _finished(study, TrialState.COMPLETE, 0.98, params=9000)
    _finished(study, TrialState.COMPLETE, 0.99, params=20000)
    _finished(study, TrialState.COMPLETE, 0.99, params=15000)
    assert best_trial(study).number == 2


def test_pruning_stops_the_bottom_half_early_in_the_epoch_only():
    """At a 20% reading a trial below the median of the others is pruned and one above it is not; at 60%, where
    stopping saves little, even a hopeless reading is let finish."""
    study = optuna.create_study(direction="maximize", pruner=make_pruner())
    for i in range(12):
        t = study.ask()
        for step in (20, 40, 60, 80):
            t.report(0.90 + 0.008 * i, step)  # readings spread from 0.90 to 0.988, median 0.944
        study.tell(t, 0.99)

    def reading(value, step):
        t = study.ask()
        t.report(value, step)
        return t.should_prune()

    assert reading(0.94, 20)
    assert not reading(0.95, 20)
    assert not reading(0.10, 60) and 60 > PRUNE_UNTIL
    assert reading(0.10, PRUNE_UNTIL)


@pytest.mark.parametrize("name", ["tpe", "random"])
def test_the_sampler_is_reseeded_per_trial_number(name):
    """Same seed and trial number, same proposal, whatever ran before: workers on many machines given the same
    --seed still propose different candidates (different trial numbers), and a one-worker run repeats."""
    def proposals(seed, n=4):
        study = optuna.create_study(sampler=make_sampler(name, seed))
        return [study.ask().suggest_float("x", 0, 1) for _ in range(n)]

    assert proposals(1) == proposals(1)
    assert proposals(1) != proposals(2)
    assert len(set(proposals(1))) == 4


@pytest.mark.parametrize("name", ["tpe", "random"])
def test_a_trials_proposal_does_not_depend_on_what_the_trials_before_it_sampled(name):
    """Each trial is proposed by a sampler seeded from the seed and its number (the TPE's startup sampler too)."""
    def fourth(sampled_before):
        study = optuna.create_study(sampler=make_sampler(name, 1))
        for _ in range(3):
            trial = study.ask()
            if sampled_before:
                trial.suggest_float("x", 0, 1)
            study.tell(trial, 0.5)
        return study.ask().suggest_float("x", 0, 1)

    assert fourth(True) == fourth(False)


@pytest.mark.parametrize("name", ["tpe", "random"])
def test_the_size_share_is_drawn_in_its_band_and_follows_the_seed(name):
    low, high = 0.05, 1.0

    def shares(seed, n=6):
        study = optuna.create_study(sampler=make_sampler(name, seed, Mode("pareto"), (0.2, 0.4, 1.0)))
        return [study.ask().suggest_float(SIZE_SHARE, low, high) for _ in range(n)]

    assert shares(1) == shares(1) and shares(1) != shares(2)
    edges = [low, 0.2, 0.4, 1.0]
    for number, share in enumerate(shares(1)):
        band = number % 3
        assert edges[band] <= share <= edges[band + 1]


def test_a_study_is_created_labelled_then_resumed_only_with_the_same_identity(tmp_path):
    storage = f"sqlite:///{tmp_path}/nas.db"
    identity = {"val_size": 10_000, "max_params": 25_000}
    made = create_or_resume(storage, "s", identity, make_sampler("random", 0))
    assert made.user_attrs == identity
    resumed = create_or_resume(storage, "s", identity, make_sampler("random", 0))
    assert internals.study_id(resumed) == internals.study_id(made)
    with pytest.raises(StorageError, match="max_params=25000, not 9000"):
        create_or_resume(storage, "s", {**identity, "max_params": 9000}, make_sampler("random", 0))


def test_a_study_of_unlabelled_trials_is_not_taken_over(tmp_path):
    storage = f"sqlite:///{tmp_path}/nas.db"
    optuna.create_study(study_name="b", storage=storage).tell(optuna.load_study(study_name="b", storage=storage).ask(), 1)
    with pytest.raises(StorageError, match="not made by a search"):
        create_or_resume(storage, "b", {"max_params": 1}, make_sampler("random", 0))


def test_loading_an_unknown_study_names_the_ones_there(tmp_path):
    storage = f"sqlite:///{tmp_path}/nas.db"
    optuna.create_study(study_name="here", storage=storage)
    with pytest.raises(StorageError, match="studies here: here"):
        load_study(storage, "gone")
