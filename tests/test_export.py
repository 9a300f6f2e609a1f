import pickle

import pytest
import torch

from nas import export
from nas.build import build
from nas.spec import Candidate
from tests.conftest import REFERENCES


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
    assert export.read_candidate(path) == candidate


def test_weights_that_do_not_fit_the_spec_are_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    export.save(build(REFERENCES["R1"].arch), REFERENCES["R2"], path)  # R2's spec, R1's weights
    with pytest.raises(export.WeightsError, match="do not fit"):
        export.load(path)


@pytest.mark.parametrize("content", [b"", b"not safetensors at all", pickle.dumps({"w": [1, 2, 3]})])
def test_garbage_and_pickles_are_refused_without_unpickling(tmp_path, content):
    path = tmp_path / "m.safetensors"
    path.write_bytes(content)
    with pytest.raises(export.WeightsError, match="m.safetensors"):
        export.load(path)


def test_truncated_weights_are_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    export.save(build(REFERENCES["R1"].arch), REFERENCES["R1"], path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(export.WeightsError):
        export.load(path)
