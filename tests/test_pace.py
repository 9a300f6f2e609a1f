"""The trial time limit: --trial-time-limit as given, else a multiple of the study's own earlier trials' pace."""
import optuna
import pytest
from optuna.distributions import FloatDistribution

from nas.engine import pace
from nas.engine.train import TooSlow

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _study(*attrs: dict) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    for a in attrs:
        study.add_trial(optuna.trial.create_trial(value=0.9, params={"x": 0.5},
                                                  distributions={"x": FloatDistribution(0, 1)}, user_attrs=a))
    return study


HOST = "here"


def test_an_explicit_limit_is_taken_as_given():
    assert pace.time_limit(_study(), 0, 90.0, HOST) == (90.0, "--trial-time-limit")


def test_no_relative_limit_before_enough_earlier_trials():
    study = _study(*({pace.KEY: 100.0} for _ in range(pace.MIN_PEERS - 1)))
    assert pace.time_limit(study, 99, None, HOST) == (None, "")


def test_the_relative_limit_is_a_multiple_of_the_median_of_earlier_admitted_trials():
    projections = [40.0, 50.0, 60.0, 70.0, 80.0]
    study = _study(*({pace.KEY: p} for p in projections),
                   {pace.KEY: 5000.0, "rejected": "too_slow"},  # a rejected one does not raise the pace
                   {"rejected": "over_budget"},  # never trained: no projection
                   {pace.KEY: 1.0})  # a later trial (number 7) does not count for trial 7
    limit, why = pace.time_limit(study, 7, None, HOST)
    assert limit == pace.SLOWER_THAN_MEDIAN * 60.0
    assert why == f"{pace.SLOWER_THAN_MEDIAN:g}x the median 60 s of 5 earlier trials on this machine"


def test_each_machine_is_held_to_its_own_pace():
    here = [{pace.KEY: p, pace.HOST_KEY: HOST} for p in (40.0, 50.0, 60.0)]
    elsewhere = [{pace.KEY: 1000.0, pace.HOST_KEY: "slow-box"} for _ in range(5)]
    unlabelled = {pace.KEY: 70.0}  # made before trials recorded their machine: counts for every machine
    study = _study(*here, *elsewhere, unlabelled)
    assert pace.time_limit(study, 99, None, HOST) == (pace.SLOWER_THAN_MEDIAN * 55.0, "2x the median 55 s of 4 "
                                                                                        "earlier trials on this machine")
    assert pace.time_limit(study, 99, None, "slow-box")[0] == pace.SLOWER_THAN_MEDIAN * 1000.0
    assert pace.time_limit(study, 99, None, "new-box") == (None, "")  # one earlier trial of its own: no limit yet


def test_the_relative_limit_never_falls_under_its_floor():
    study = _study(*({pace.KEY: 0.5} for _ in range(pace.MIN_PEERS)))
    assert pace.time_limit(study, 99, None, HOST)[0] == pace.NEVER_BELOW


def test_in_pareto_mode_a_candidate_is_judged_against_trials_of_similar_size():
    """Many small fast trials must not make a large candidate look slow: the median is over its size's peers."""
    small = [{pace.KEY: 10.0, "params": 4_000} for _ in range(8)]
    large = [{pace.KEY: s, "params": p} for s, p in ((40.0, 20_000), (50.0, 24_000), (60.0, 14_000), (70.0, 22_000))]
    study = _study(*small, *large)
    assert pace.time_limit(study, 99, None, HOST)[0] == pace.NEVER_BELOW  # the whole study: 2 x 10 s, under the floor
    limit, why = pace.time_limit(study, 99, None, HOST, params=23_000)
    assert limit == pace.SLOWER_THAN_MEDIAN * 55.0  # only the four within 2x of 23k
    assert why == "2x the median 55 s of 4 earlier trials of similar size on this machine"
    assert pace.time_limit(study, 99, None, HOST, params=4_500)[0] == pace.NEVER_BELOW  # the small ones' own pace


def test_with_too_few_trials_of_similar_size_the_nearest_in_size_judge():
    trials = [{pace.KEY: s, "params": p} for s, p in ((10.0, 1_000), (20.0, 2_000), (30.0, 3_000), (40.0, 5_000),
                                                       (90.0, 8_000))]
    study = _study(*trials)
    # none lies within 2x of 20k: the MIN_PEERS nearest (8k, 5k, 3k, 2k) set the median, 35 s
    assert pace.time_limit(study, 99, None, HOST, params=20_000)[0] == pace.SLOWER_THAN_MEDIAN * 35.0


def test_check_stops_only_a_run_over_its_limit():
    pace.check(100.0, None, "")
    pace.check(100.0, 100.0, "")
    with pytest.raises(TooSlow, match=r"projected 101 s of training, over the 100 s limit \(why\)"):
        pace.check(101.0, 100.0, "why")
