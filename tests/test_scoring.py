"""nas.results.scoring: test accuracy of the trials a report shows, from their stored weights, on all the test images
of the data they record; nothing for data that cannot be read again or trials without weights."""
import dataclasses

import numpy as np
import optuna
import pytest
import torch

from nas.config import SearchConfig
from nas.data import DataInfo
from nas.deploy import export
from nas.results import scoring
from nas.space.blocks import GlobalAvgPool, Linear
from nas.space.build import build
from nas.space.spec import ArchSpec, Candidate, TrainRecipe
from tests.conftest import QUADRANT_CLASSES as CLASSES, QUADRANT_SHAPE as SHAPE, quadrant_images

optuna.logging.set_verbosity(optuna.logging.WARNING)
CANDIDATE = Candidate(ArchSpec((GlobalAvgPool(), Linear(CLASSES)), SHAPE, CLASSES), TrainRecipe())
ALWAYS = 2  # the class the network below always predicts


@pytest.fixture
def npz(tmp_path):
    (x_train, y_train), (x_test, y_test) = quadrant_images(120, 0), quadrant_images(60, 1)
    path = tmp_path / "quadrants.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path, y_test


@pytest.fixture
def info(npz):
    return DataInfo(f"npz:{npz[0]}", SHAPE, tuple(map(str, range(CLASSES))), (0.5,), (0.25,))


@pytest.fixture
def config(tmp_path):
    return SearchConfig(results_dir=str(tmp_path / "results"))


def _always(path, info):
    """Weights that predict class ALWAYS whatever the image, saved at `path` with `info`."""
    model = build(CANDIDATE.arch, seed=0)
    linear = model[-1]
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.copy_(torch.nn.functional.one_hot(torch.tensor(ALWAYS), CLASSES).float())
    export.save(model, CANDIDATE, path, info)
    return path


def test_data_that_cannot_be_read_again_gives_no_splits(info, config):
    assert scoring.study_data(None, config) is None
    assert scoring.study_data(dataclasses.replace(info, source=scoring.NO_DATA), config) is None


def test_the_recorded_data_is_read_again_with_all_its_test_images(npz, info, config):
    splits = scoring.study_data(info, config)
    assert torch.equal(splits.y_test, torch.from_numpy(npz[1]).long())


def test_weights_are_scored_on_every_test_image(npz, info, config, tmp_path):
    accuracy = scoring.weights_accuracy(_always(tmp_path / "w.safetensors", info), scoring.study_data(info, config))
    assert accuracy == float(np.mean(npz[1] == ALWAYS)) and 0 < accuracy < 1


def _study_with_weights(tmp_path, info):
    """Trial 0 with stored weights (class ALWAYS), trial 1 without."""
    store = export.artifact_store(tmp_path / "artifacts")
    study = optuna.create_study(direction="maximize")
    for stored in (True, False):
        trial = study.ask()
        trial.set_user_attr("spec", CANDIDATE.to_json())
        if stored:
            path = _always(tmp_path / "scratch.safetensors", info)
            trial.set_user_attr("weights_artifact", optuna.artifacts.upload_artifact(
                artifact_store=store, file_path=str(path), study_or_trial=trial))
        study.tell(trial, 0.5)
    return study, store


def test_accuracies_score_the_trials_with_weights_by_number(npz, info, config, tmp_path):
    study, store = _study_with_weights(tmp_path, info)
    scores, splits, unreachable = scoring.accuracies(study.trials, store, config)
    assert scores == {0: float(np.mean(npz[1] == ALWAYS))} and unreachable == []
    assert torch.equal(splits.y_test, torch.from_numpy(npz[1]).long())
    assert scoring.accuracies(study.trials[1:], store, config) == ({}, None, [])  # no trial with weights


def test_trials_whose_weights_are_out_of_reach_are_named_not_scored(npz, info, config, tmp_path):
    study, store = _study_with_weights(tmp_path, info)
    elsewhere = export.artifact_store(tmp_path / "another-machine")
    assert scoring.accuracies(study.trials, elsewhere, config) == ({}, None, [study.trials[0]])


def test_accuracies_are_none_for_weights_of_data_that_cannot_be_read_again(info, config, tmp_path):
    study, store = _study_with_weights(tmp_path, dataclasses.replace(info, source=scoring.NO_DATA))
    assert scoring.accuracies(study.trials, store, config) == ({}, None, [])
