import gc

import optuna
import pytest
from optuna.trial import TrialState

from nas import export, search
from nas.search import FINAL_STEP, Objective, SearchConfig, Stopper, open_study, run_worker
from nas.space import load_space
from nas.study import REJECTED, best_trial, is_trained, make_pruner, make_sampler, trained_count
from nas.train import PROGRESS_POINTS

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _run(tmp_path, toy, max_params, trials, seed=0):
    config = SearchConfig(trials=trials, max_params=max_params, seed=seed, quiet=True, device="cpu")
    study = optuna.create_study(direction="maximize", sampler=make_sampler("tpe", seed), pruner=make_pruner())
    objective = Objective(config, load_space(), toy, "cpu", export.artifact_store(tmp_path / "a"), tmp_path / "s")
    study.optimize(objective, callbacks=[Stopper(trials, objective)], catch=(Exception,))
    return study


def test_rejected_candidates_are_never_trained_and_do_not_count(tmp_path, toy):
    study = _run(tmp_path, toy, max_params=450, trials=2)
    rejected = [t for t in study.trials if t.user_attrs.get("rejected") == REJECTED]
    trained = [t for t in study.trials if is_trained(t)]
    assert len(trained) == trained_count(study) == 2
    assert rejected, "a 450 budget should reject some of the default space"
    for t in rejected:
        assert t.state == TrialState.PRUNED and t.user_attrs["params"] >= 450
        assert not t.intermediate_values and "train_seconds" not in t.user_attrs and "weights_artifact" not in t.user_attrs
    for t in trained:
        assert t.user_attrs["params"] < 450


def test_completed_trials_carry_everything_the_dashboard_shows(tmp_path, toy):
    study = _run(tmp_path, toy, max_params=25_000, trials=2)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert done
    for t in done:
        for key in ("params", "flops", "val_acc", "test_acc", "train_seconds", "spec", "candidate_id", "weights_artifact"):
            assert key in t.user_attrs, key
        assert t.value == t.user_attrs["val_acc"]
        assert set(t.intermediate_values) == {round(f * 100) for f in PROGRESS_POINTS} | {FINAL_STEP}
        assert t.intermediate_values[FINAL_STEP] == t.value
    assert best_trial(study).value == max(t.value for t in done)


def test_a_diverging_trial_fails_with_its_reason_and_the_study_goes_on(tmp_path, toy):
    config = SearchConfig(trials=2, quiet=True, device="cpu")
    space = load_space()
    space.recipe.update(optimizer=["sgd_nesterov"], sgd_lr=1e8, schedule=["constant"], grad_clip=[0.0])
    space.arch.update(bn=[False])
    study = optuna.create_study(direction="maximize")
    objective = Objective(config, space, toy, "cpu", export.artifact_store(tmp_path / "a"), tmp_path / "s")
    study.optimize(objective, callbacks=[Stopper(2, objective)], catch=(Exception,))
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(failed) >= 2
    assert all("fail_reason" in t.user_attrs and "loss became" in t.user_attrs["fail_reason"] for t in failed)


def test_externally_failed_trials_are_not_counted():
    study = optuna.create_study()
    t = study.ask()
    study.tell(t, state=TrialState.FAIL)  # e.g. a worker killed mid-trial: retried, so not counted
    assert not is_trained(study.trials[0])


def test_candidates_over_the_compute_ceiling_are_rejected_untrained(tmp_path, toy):
    config = SearchConfig(trials=2, max_params=25_000, quiet=True, device="cpu")
    space = load_space()
    space.max_mflops = 1.0
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    objective = Objective(config, space, toy, "cpu", export.artifact_store(tmp_path / "a"), tmp_path / "s")
    study.optimize(objective, callbacks=[Stopper(2, objective)], catch=(Exception,))
    heavy = [t for t in study.trials if t.user_attrs.get("rejected") == "over_flops"]
    assert heavy and trained_count(study) == 2
    assert all(t.user_attrs["flops"] > 1e6 and "train_seconds" not in t.user_attrs for t in heavy)
    assert all(t.user_attrs["flops"] <= 1e6 for t in study.trials if is_trained(t))


def test_too_slow_candidates_are_stopped_early_and_not_counted(tmp_path, toy):
    config = SearchConfig(trials=1, max_params=25_000, quiet=True, device="cpu", trial_time_limit=1e-6)
    objective = Objective(config, load_space(), toy, "cpu", export.artifact_store(tmp_path / "a"), tmp_path / "s")
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=3, catch=(Exception,))
    slow = [t for t in study.trials if t.user_attrs.get("rejected") == "too_slow"]
    assert slow and all(t.state == TrialState.PRUNED and "over the" in t.user_attrs["slow_reason"] for t in slow)
    assert trained_count(study) == 0


def test_pruning_stops_the_bottom_half_early_in_the_epoch_only():
    """At a 20% reading a trial below the median of the others is pruned and one above it is not; at 60%, where
    stopping saves little, even a hopeless reading is let finish."""
    from nas.study import PRUNE_UNTIL

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


def test_a_worker_keeps_its_long_lived_objects_out_of_collections_between_trials_only(tmp_path, toy, monkeypatch):
    config = SearchConfig(trials=3, max_params=25_000, quiet=True, device="cpu", jobs=1, results_dir=str(tmp_path))
    open_study(config, load_space())
    monkeypatch.setattr(search, "load_data", lambda config, device: toy)
    frozen = []
    real_train = search.train

    def spy(*args, **kwargs):
        frozen.append(gc.get_freeze_count())
        return real_train(*args, **kwargs)

    monkeypatch.setattr(search, "train", spy)
    run_worker(config)
    assert len(frozen) >= 3 and frozen[-1] > 0  # settled after each trial
    assert gc.get_freeze_count() == 0  # released once the worker is done: nothing it made is kept for good
