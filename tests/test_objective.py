"""One trial: sample, budget filter, train, score, record; its faults fail that trial and the study goes on."""
import dataclasses

import optuna
import pytest
import torch
from optuna.trial import TrialState

from nas.deploy import export
from nas import logs
from nas.engine import objective as objective_mod
from nas.config import SearchConfig
from nas.data import DataInfo, Splits
from nas.engine.objective import FINAL_STEP, Objective, failure_reason
from nas.space.space_file import load_space
from nas.space.spec import Candidate
from nas.engine.study import FAILED_BY_CANDIDATE, FAILED_BY_ERROR, REJECTED, best_trial, is_trained, make_pruner, make_sampler, trained_count
from nas.engine.train import PROGRESS_POINTS
from nas.engine.workers import Stopper
from tests.conftest import synthetic_splits
from tests.conftest import Untouchable

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _objective(tmp_path, splits, space=None, **settings):
    config = SearchConfig(quiet=True, device="cpu", **settings)
    return Objective(config, space or load_space(), splits, "cpu", export.artifact_store(tmp_path / "a"), tmp_path / "s")


def _run(tmp_path, toy, max_params, trials, seed=0):
    study = optuna.create_study(direction="maximize", sampler=make_sampler("tpe", seed), pruner=make_pruner())
    objective = _objective(tmp_path, toy, max_params=max_params)
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
        for key in ("params", "flops", "val_acc", "train_seconds", "spec", "candidate_id", "weights_artifact"):
            assert key in t.user_attrs, key
        assert t.value == t.user_attrs["val_acc"]
        assert set(t.intermediate_values) == {round(f * 100) for f in PROGRESS_POINTS} | {FINAL_STEP}
        assert t.intermediate_values[FINAL_STEP] == t.value
    assert best_trial(study).value == max(t.value for t in done)


def test_a_trial_is_scored_on_validation_alone_and_never_reads_the_test_set(tmp_path, toy, capsys):
    logs.configure(quiet=False)
    untouchable = Untouchable()
    splits = dataclasses.replace(toy, x_test=untouchable, y_test=untouchable)  # any use of the test set raises
    study = optuna.create_study(direction="maximize", sampler=make_sampler("random", 0))
    objective = Objective(SearchConfig(device="cpu"), load_space(), splits, "cpu",
                          export.artifact_store(tmp_path / "a"), tmp_path / "s")
    study.optimize(objective, callbacks=[Stopper(2, objective)])
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 2 and not any("test_acc" in t.user_attrs for t in study.trials)
    lines = [line for line in capsys.readouterr().out.splitlines() if " val " in line]
    assert len(lines) == 2 and not any("test" in line for line in lines), lines


def test_a_diverging_trial_fails_with_its_reason_and_the_study_goes_on(tmp_path, toy):
    space = load_space()
    space.recipe.update(optimizer=["sgd_nesterov"], sgd_lr=1e8, schedule=["constant"], grad_clip=[0.0])
    space.arch.update(bn=[False])
    study = optuna.create_study(direction="maximize")
    objective = _objective(tmp_path, toy, space)
    study.optimize(objective, callbacks=[Stopper(2, objective)], catch=(Exception,))
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(failed) >= 2
    assert all("fail_reason" in t.user_attrs and "loss became" in t.user_attrs["fail_reason"] for t in failed)
    assert all(is_trained(t) for t in failed)  # the candidate's own failure counts


def test_candidates_are_drawn_under_the_spaces_compute_ceiling(tmp_path, toy):
    """The space's max_mflops is the default --max-mflops: the width search keeps under it (rejections under each
    ceiling: tests/test_ceilings.py)."""
    space = load_space()
    space.max_mflops = 1.0
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    objective = _objective(tmp_path, toy, space, max_params=25_000)
    study.optimize(objective, callbacks=[Stopper(2, objective)], catch=(Exception,))
    assert trained_count(study) == 2
    assert all(t.user_attrs["flops"] <= 1e6 for t in study.trials if is_trained(t))


def test_too_slow_candidates_are_stopped_early_and_not_counted(tmp_path, toy):
    objective = _objective(tmp_path, toy, max_params=25_000, trial_time_limit=1e-6)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=3, catch=(Exception,))
    slow = [t for t in study.trials if t.user_attrs.get("rejected") == "too_slow"]
    assert slow and all(t.state == TrialState.PRUNED and "over the" in t.user_attrs["slow_reason"] for t in slow)
    assert trained_count(study) == 0


def test_by_default_a_candidate_far_slower_than_the_earlier_trials_is_rejected(tmp_path, toy, monkeypatch):
    from nas.engine import pace

    monkeypatch.setattr(pace, "NEVER_BELOW", 0.0)  # toy trials take milliseconds
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0),
                                pruner=optuna.pruners.NopPruner())
    objective = _objective(tmp_path, toy, max_params=25_000)
    study.optimize(objective, n_trials=pace.MIN_PEERS, catch=(Exception,))
    assert trained_count(study) == pace.MIN_PEERS  # no limit before MIN_PEERS paces are known
    assert all(t.user_attrs[pace.KEY] > 0 and t.user_attrs[pace.HOST_KEY] == pace.this_host() for t in study.trials)
    for _ in range(3 * pace.MIN_PEERS):  # earlier trials a million times faster set the median
        study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={pace.KEY: 1e-6}))
    study.optimize(objective, n_trials=1, catch=(Exception,))
    last = study.trials[-1]
    assert last.user_attrs.get("rejected") == "too_slow" and last.state == TrialState.PRUNED
    assert "the median 0 s of 16 earlier trials" in last.user_attrs["slow_reason"]


def test_rejections_in_a_row_are_counted_and_reset_by_a_trained_trial(tmp_path, toy):
    objective = _objective(tmp_path, toy, max_params=450)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=12, catch=(Exception,))
    streak = 0
    for t in study.trials:
        streak = streak + 1 if "rejected" in t.user_attrs else 0
    assert any("rejected" in t.user_attrs for t in study.trials)
    assert objective.rejected_in_a_row == streak


def _faulty_objective(tmp_path, splits):
    space = load_space()
    # no BatchNorm and no activation: nothing can clamp an overflow, so whatever network the sampler draws,
    # huge inputs diverge (a ReLU or a BatchNorm can hide them, depending on the network)
    space.arch.update(bn=False, activation="none")
    space.max_mflops = None  # every sampled candidate reaches training, where these faults happen
    return _objective(tmp_path, splits, space, trials=3)


@pytest.mark.parametrize("poison, reason", [(float("nan"), "loss became nan"), (3e38, "loss became")],
                         ids=["nan-input", "exploding-activations"])
def test_bad_numbers_fail_the_trial_with_a_reason_and_the_study_goes_on(tmp_path, poison, reason):
    good = synthetic_splits(n_train=128, n_val=64, n_test=64)
    bad = synthetic_splits(n_train=128, n_val=64, n_test=64)
    bad.x_train = torch.full_like(bad.x_train, poison)
    objective = _faulty_objective(tmp_path, bad)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=1, catch=(Exception,))
    objective.splits = good
    study.optimize(objective, callbacks=[Stopper(2, objective)], n_trials=5, catch=(Exception,))
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert failed and reason in failed[0].user_attrs["fail_reason"]
    assert any(t.state == TrialState.COMPLETE for t in study.trials), "the study went on after the failure"


def test_out_of_memory_fails_the_trial_with_a_reason(tmp_path, monkeypatch):
    def no_memory(*a, **k):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 99999999999 bytes")

    monkeypatch.setattr(objective_mod, "prepare_model", no_memory)
    study = optuna.create_study(direction="maximize")
    study.optimize(_faulty_objective(tmp_path, synthetic_splits(64, 32, 32)), n_trials=2, catch=(Exception,))
    reasons = [t.user_attrs.get("fail_reason", "") for t in study.trials]
    assert all(r.startswith("out of memory") for r in reasons), reasons
    assert all(is_trained(t) for t in study.trials)  # counted: a search of such trials ends
    assert {t.user_attrs["fail_kind"] for t in study.trials} == {FAILED_BY_CANDIDATE}


def _disk_full(*a, **k):
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize("where", ["train", "upload_weights"], ids=["in-training", "saving-the-weights"])
def test_an_error_not_the_candidates_fails_the_trial_with_its_reason_and_is_not_counted(tmp_path, monkeypatch, where):
    """A bug, a broken install or a full disk would fail any candidate: counting it would end a search untrained."""
    monkeypatch.setattr(objective_mod if where == "train" else objective_mod.export, where, _disk_full)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    small = synthetic_splits(n_train=128, n_val=64, n_test=64)
    study.optimize(_objective(tmp_path, small, max_params=25_000), n_trials=2, catch=(Exception,))
    failed = [t for t in study.trials if "rejected" not in t.user_attrs]
    assert failed and all(t.state == TrialState.FAIL for t in failed)
    assert {t.user_attrs.get("fail_reason") for t in failed} == {"OSError: [Errno 28] No space left on device"}
    assert {t.user_attrs.get("fail_kind") for t in failed} == {FAILED_BY_ERROR}
    assert trained_count(study) == 0


@pytest.mark.parametrize("error, expected", [
    (MemoryError(), "out of memory: MemoryError"),
    (RuntimeError("CUDA out of memory. Tried to allocate 2 GiB\nmore detail"), "out of memory: CUDA out of memory."),
    (ValueError("bad\nsecond line"), "ValueError: bad"),
    (KeyError(), "KeyError: "),
])
def test_failure_reasons_are_one_line(error, expected):
    reason = failure_reason(error)
    assert reason.startswith(expected) and "\n" not in reason


def test_candidates_follow_the_datas_shape_and_classes_and_their_weights_record_the_data(tmp_path):
    """Colour 16x16 images in 5 classes: the space is sampled for them, and each trial's weights say what they were
    trained on, so an export of them normalises and names the classes by itself."""
    g = torch.Generator().manual_seed(0)
    info = DataInfo("npz:/somewhere/parts.npz", (3, 16, 16), ("a", "b", "c", "d", "e"), (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    tensors = []
    for n in (96, 32, 32):
        tensors += [torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=g), torch.arange(n) % 5]
    splits = Splits(*tensors, info=info)
    study = optuna.create_study(direction="maximize", sampler=make_sampler("random", 0))
    objective = _objective(tmp_path, splits, max_params=5_000)
    study.optimize(objective, callbacks=[Stopper(2, objective)])
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 2
    for t in done:
        candidate = Candidate.from_json(t.user_attrs["spec"])
        assert (candidate.arch.input_shape, candidate.arch.num_classes) == ((3, 16, 16), 5)
        out = export.export_trial(t, export.artifact_store(tmp_path / "a"), tmp_path / f"t{t.number}.safetensors")
        assert export.read_spec(out) == (candidate, info)
        assert export.load(out).info == info


def test_a_reference_built_for_other_data_is_rejected_untrained(tmp_path, toy):
    """--warm-start queues R1, R2, R4, built for 1x28x28 and 10 classes; on two-class data they cannot train."""
    toy.info = DataInfo(source="tensors", shape=(1, 28, 28), classes=("a", "b"), mean=(0.0,), std=(1.0,))
    toy.y_train, toy.y_val, toy.y_test = toy.y_train % 2, toy.y_val % 2, toy.y_test % 2
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({}, user_attrs={"reference": "R1"})
    study.optimize(_objective(tmp_path, toy), n_trials=1, catch=(Exception,))
    trial = study.trials[0]
    assert trial.state == TrialState.PRUNED and trial.user_attrs["rejected"] == "other_data"
    assert "train_seconds" not in trial.user_attrs
