import dataclasses
import errno
import json
import os
import pickle
import stat
from pathlib import Path

import optuna
import pytest
import safetensors
import torch
from safetensors.torch import load_file, save_file

from nas import cli, network_card
from nas.deploy import export
from nas.space.build import Network, build
from nas.data import DataInfo
from nas.space.spec import ArchSpec, Candidate, SpecError
from nas.space.blocks import Conv, GlobalAvgPool, Linear, Pool
from tests.conftest import REFERENCES

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_weights_reload_into_an_identical_network(tmp_path, name):
    candidate = REFERENCES[name]
    model = build(candidate.arch, seed=3)
    model.train()
    model(torch.randn(8, 1, 28, 28))  # moves BatchNorm statistics away from their initial values
    model.eval()
    path = tmp_path / "m.safetensors"
    export.save(model, candidate, path)
    loaded = export.load(path)
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(model(x), loaded(x))
    assert Candidate.from_json(path.with_suffix(".json").read_text()) == candidate
    # the spec also travels inside the weights file, so the sidecar is optional
    path.with_suffix(".json").unlink()
    assert export.read_spec(path)[0] == candidate


def test_weights_that_do_not_fit_the_spec_are_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    export.save(build(REFERENCES["R1"].arch), REFERENCES["R2"], path)  # R2's spec, R1's weights
    with pytest.raises(export.WeightsError, match="do not fit"):
        export.load(path)


class _Booby:
    """Unpickling this creates `marker`: proof that a file was unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.mark.parametrize("kind", ["empty", "garbage", "pickle", "torch.save"])
def test_garbage_and_pickles_are_refused_without_unpickling(tmp_path, kind):
    marker = tmp_path / "unpickled"
    path = tmp_path / "m.safetensors"
    if kind == "torch.save":
        torch.save({"w": _Booby(marker)}, path)
    else:
        path.write_bytes({"empty": b"", "garbage": b"not safetensors at all",
                          "pickle": pickle.dumps({"w": _Booby(marker)})}[kind])
    with pytest.raises(export.WeightsError, match="m.safetensors"):
        export.load(path)
    with pytest.raises(export.WeightsError, match="m.safetensors"):
        network_card.spec_from(str(path))  # what `describe` and `evaluate --spec` read
    assert not marker.exists()


def test_truncated_weights_are_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    export.save(build(REFERENCES["R1"].arch), REFERENCES["R1"], path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(export.WeightsError):
        export.load(path)


def test_a_crash_while_saving_weights_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    candidate = REFERENCES["R2"]
    model = build(candidate.arch)
    best = tmp_path / "best.safetensors"
    export.save(model, candidate, best)
    good = best.read_bytes()

    def crash(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        export.save(model, candidate, best)
    assert best.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.json", "best.safetensors"]
    export.load(best)


def _full_disk(tensors, filename, metadata=None):
    """What safetensors raises when the disk fills up mid-write: not an OSError."""
    Path(filename).write_bytes(b"partial")
    raise safetensors.SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


def test_a_full_disk_while_saving_weights_names_the_file_and_keeps_the_previous_one(tmp_path, monkeypatch):
    candidate, best = REFERENCES["R2"], tmp_path / "best.safetensors"
    export.save(build(candidate.arch), candidate, best)
    good = best.read_bytes()
    monkeypatch.setattr(export, "save_file", _full_disk)
    with pytest.raises(OSError) as e:
        export.save(build(candidate.arch), candidate, best)
    assert cli._user_message(e.value) == f"{best}: No space left on device"
    assert best.read_bytes() == good and sorted(p.name for p in tmp_path.iterdir()) == ["best.json", "best.safetensors"]


def test_a_full_disk_fails_every_trials_weights_with_the_same_reason(tmp_path, monkeypatch):
    """The error names the scratch folder, not the trial's file, so the failures of a full disk read alike."""
    monkeypatch.setattr(export, "save_file", _full_disk)
    study, store, scratch = optuna.create_study(), export.artifact_store(tmp_path / "art"), tmp_path / "scratch"
    reasons = set()
    for _ in range(2):
        with pytest.raises(OSError) as e:
            export.upload_weights(study.ask(), build(REFERENCES["R2"].arch), REFERENCES["R2"], store, scratch)
        reasons.add(str(e.value))
    assert reasons == {f"[Errno {errno.ENOSPC}] No space left on device: '{scratch}'"}
    assert not list(scratch.iterdir())


def test_weights_and_spec_files_have_the_mode_the_umask_gives_a_new_file(tmp_path):
    old = os.umask(0o022)
    try:
        export.save(build(REFERENCES["R2"].arch), REFERENCES["R2"], tmp_path / "m.safetensors")
    finally:
        os.umask(old)
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()} == {"m.json": 0o644,
                                                                                     "m.safetensors": 0o644}


def test_a_file_whose_spec_travels_inside_is_read_before_the_sidecar(tmp_path):
    r1, r2 = REFERENCES["R1"], REFERENCES["R2"]
    path = tmp_path / "w.safetensors"
    export.save(build(r2.arch), r2, path)
    path.with_suffix(".json").write_text(r1.to_json())  # a stale sidecar does not win
    assert export.read_spec(path)[0] == r2
    save_file(build(r2.arch).state_dict(), str(path))  # no spec inside: the sidecar is used
    assert export.read_spec(path)[0] == r1


CIFAR_LIKE = DataInfo("cifar10", (3, 32, 32), tuple("abcdefghij"), (0.49, 0.48, 0.45), (0.25, 0.24, 0.26))


def _colour_candidate():
    return Candidate(ArchSpec(blocks=(Conv(8, bn=True, act="relu"), Pool(), Conv(12), GlobalAvgPool(), Linear(10)),
                              input_shape=(3, 32, 32)))


def test_a_model_with_its_data_takes_images_in_0_1_and_normalises_them_itself(tmp_path):
    candidate = _colour_candidate()
    model = build(candidate.arch, seed=1)
    model.train()
    model(torch.randn(8, 3, 32, 32))  # BatchNorm statistics away from their initial values
    model.eval()
    path = tmp_path / "m.safetensors"
    export.save(model, candidate, path, CIFAR_LIKE)
    loaded = export.load(path)
    x = torch.rand(4, 3, 32, 32)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (CIFAR_LIKE.mean, CIFAR_LIKE.std))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model((x - mean) / std))
    assert loaded.info == CIFAR_LIKE and loaded.info.classes[3] == "d" and not loaded.training
    # the file holds the network's own state_dict, and the loaded model's keys are those
    assert set(load_file(path)) == set(model.state_dict()) == set(loaded.state_dict())
    # the spec and the data travel inside the file and in the .json beside it
    assert export.read_spec(path) == (candidate, CIFAR_LIKE)
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["data"] == CIFAR_LIKE.to_dict() and Candidate.from_dict({k: sidecar[k] for k in ("arch", "recipe")}) == candidate
    assert export.read_spec_json(path.with_suffix(".json").read_text(), "m.json") == (candidate, CIFAR_LIKE)
    save_file(load_file(path), str(path))  # no metadata: the .json beside it says it all
    assert export.read_spec(path) == (candidate, CIFAR_LIKE)


def test_a_file_without_its_data_loads_its_bare_network_as_before(tmp_path):
    """Files from before the data was recorded (MNIST or Fashion-MNIST, normalised differently): the bare network, which
    takes normalised images, as it always did; tests/test_build.py checks an old file's outputs."""
    candidate = REFERENCES["R1"]
    path = tmp_path / "old.safetensors"
    export.save(build(candidate.arch), candidate, path)
    assert "data" not in json.loads(path.with_suffix(".json").read_text())
    loaded = export.load(path)
    assert type(loaded) is Network and export.read_spec(path) == (candidate, None)
    assert type(export.load(FIXTURES / "old_every_kind.safetensors")) is Network


@pytest.mark.parametrize("info, match", [
    (dataclasses.replace(CIFAR_LIKE, shape=(3, 28, 28)), "does not match"),
    (dataclasses.replace(CIFAR_LIKE, classes=("a", "b")), "does not match"),
    (dataclasses.replace(CIFAR_LIKE, mean=(0.5,), std=(0.25,)), "does not match"),
    (dataclasses.replace(CIFAR_LIKE, std=(0.25, 0.0, 0.25)), "does not match"),
])
def test_data_that_does_not_fit_the_network_is_refused(tmp_path, info, match):
    path = tmp_path / "m.safetensors"
    candidate = _colour_candidate()
    export.save(build(candidate.arch), candidate, path, info)
    with pytest.raises(SpecError, match=match):
        export.load(path)


def test_an_export_keeps_the_data_its_weights_record(tmp_path):
    """A trial whose weights carry their data exports with it; one saved without data exports without it."""
    store, study = export.artifact_store(tmp_path / "art"), optuna.create_study()
    candidate = REFERENCES["R2"]
    model = build(candidate.arch, seed=0).eval()
    fashion = DataInfo("fashion-mnist", (1, 28, 28), tuple("abcdefghij"), (0.2860,), (0.3530,))
    plain, with_data = study.ask(), study.ask()
    for trial, data in ((plain, None), (with_data, fashion)):
        trial.set_user_attr("spec", candidate.to_json())
        trial.set_user_attr("weights_artifact", export.upload_weights(trial, model, candidate, store, tmp_path / "s", data))
    frozen = {t.number: t for t in study.get_trials()}
    out = export.export_trial(frozen[with_data.number], store, tmp_path / "data.safetensors")
    assert export.read_spec(out) == (candidate, fashion)
    assert json.loads(out.with_suffix(".json").read_text())["data"] == fashion.to_dict()
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(export.load(out)(x), model((x - 0.2860) / 0.3530))
    out = export.export_trial(frozen[plain.number], store, tmp_path / "plain.safetensors")
    assert export.read_spec(out) == (candidate, None) and "data" not in json.loads(out.with_suffix(".json").read_text())
