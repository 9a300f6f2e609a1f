"""The Optuna study: creating or resuming it, sampler seeding, the pruner, and the rules for counting trials."""
import optuna
import pytest
from optuna.trial import TrialState

from nas.errors import StudyError
from nas.study import (FAILED_BY_CANDIDATE, FAILED_BY_ERROR, NEIGHBOURS, PRUNE_UNTIL, REJECTED, best_trial,
                       choice_distance, create_or_resume, error_reason, is_trained, load_study, make_pruner,
                       make_sampler, trained_count)

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


WARMUP = optuna.distributions.FloatDistribution(0.0, 0.4)
BLOCK = optuna.distributions.CategoricalDistribution(["conv", "separable"])


def _read_at(study, params, readings):
    """A trial with these choices reporting `readings` ({percent: val}) in turn; whether it was pruned at the last."""
    study.enqueue_trial(params)
    trial = study.ask({"warmup": WARMUP, "block": BLOCK})
    for step, value in readings.items():
        trial.report(value, step)
    pruned = trial.should_prune()
    study.tell(trial, state=TrialState.PRUNED) if pruned else study.tell(trial, readings[max(readings)])
    return pruned


def test_pruning_compares_a_reading_with_the_earlier_trials_most_like_it():
    """Short warm-ups read high at 20% of the epoch and long ones low: a long warm-up is judged against the long
    ones, so it is not stopped for its schedule, while the worst of its like are. Pruned trials' readings count."""
    study = optuna.create_study(direction="maximize", pruner=make_pruner())
    for i in range(NEIGHBOURS):
        _read_at(study, {"warmup": 0.05, "block": "conv"}, {20: 0.95 + 0.001 * i, PRUNE_UNTIL: 0.97})
        _read_at(study, {"warmup": 0.38, "block": "conv"}, {20: 0.80 + 0.001 * i, PRUNE_UNTIL: 0.90})
    assert not _read_at(study, {"warmup": 0.36, "block": "conv"}, {20: 0.85})  # below the overall median 0.875
    assert _read_at(study, {"warmup": 0.36, "block": "conv"}, {20: 0.75})  # below its neighbours' median
    assert _read_at(study, {"warmup": 0.06, "block": "conv"}, {20: 0.90})
    assert not _read_at(study, {"warmup": 0.36, "block": "conv"}, {20: 0.75, 60: 0.75}) and 60 > PRUNE_UNTIL
    assert _read_at(study, {"warmup": 0.36, "block": "conv"}, {20: 0.90, PRUNE_UNTIL: 0.75})


def test_pruning_waits_for_enough_earlier_readings():
    study = optuna.create_study(direction="maximize", pruner=make_pruner())
    for i in range(NEIGHBOURS - 1):
        _read_at(study, {"warmup": 0.1, "block": "conv"}, {20: 0.95})
    assert not _read_at(study, {"warmup": 0.1, "block": "conv"}, {20: 0.10})  # only NEIGHBOURS - 1 to judge by
    assert _read_at(study, {"warmup": 0.1, "block": "conv"}, {20: 0.10})


def test_choice_distance_sums_each_choices_gap_on_its_range():
    study = optuna.create_study()
    lr = optuna.distributions.FloatDistribution(0.01, 1.0, log=True)
    trials = [optuna.trial.create_trial(params=p, distributions={k: {"warmup": WARMUP, "block": BLOCK, "lr": lr}[k]
                                                                  for k in p}, value=0.9)
              for p in ({"warmup": 0.0, "block": "conv", "lr": 0.01}, {"warmup": 0.1, "block": "conv", "lr": 0.1},
                        {"warmup": 0.1, "block": "separable"})]
    assert choice_distance(trials[0], trials[0]) == 0
    assert choice_distance(trials[0], trials[1]) == pytest.approx(0.25 + 0.5)  # lr: a tenfold gap on a log range
    assert choice_distance(trials[1], trials[2]) == pytest.approx(1 + 1)  # another block; lr only in one


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


def test_a_study_is_created_labelled_then_resumed_only_with_the_same_identity(tmp_path):
    storage = f"sqlite:///{tmp_path}/nas.db"
    identity = {"val_size": 10_000, "max_params": 25_000}
    made = create_or_resume(storage, "s", identity, make_sampler("random", 0))
    assert made.user_attrs == identity
    assert create_or_resume(storage, "s", identity, make_sampler("random", 0))._study_id == made._study_id
    with pytest.raises(StudyError, match="max_params=25000, not 9000"):
        create_or_resume(storage, "s", {**identity, "max_params": 9000}, make_sampler("random", 0))


def test_a_study_lacking_a_newer_label_is_checked_against_its_assumed_value(tmp_path):
    storage = f"sqlite:///{tmp_path}/nas.db"
    create_or_resume(storage, "old", {"max_params": 25_000}, make_sampler("random", 0))  # made before val_size
    with pytest.raises(StudyError, match="val_size=5000, not 10000"):
        create_or_resume(storage, "old", {"val_size": 10_000, "max_params": 25_000}, make_sampler("random", 0),
                         assumed={"val_size": 5000})


def test_a_study_of_unlabelled_trials_is_not_taken_over(tmp_path):
    storage = f"sqlite:///{tmp_path}/nas.db"
    optuna.create_study(study_name="b", storage=storage).tell(optuna.load_study(study_name="b", storage=storage).ask(), 1)
    with pytest.raises(StudyError, match="not made by a search"):
        create_or_resume(storage, "b", {"max_params": 1}, make_sampler("random", 0))


def test_loading_an_unknown_study_names_the_ones_there(tmp_path):
    storage = f"sqlite:///{tmp_path}/nas.db"
    optuna.create_study(study_name="here", storage=storage)
    with pytest.raises(StudyError, match="studies here: here"):
        load_study(storage, "gone")
