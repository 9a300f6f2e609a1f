"""The device, the default number of workers, and data and models placed on it."""
import pytest
import torch

from nas import data as data_mod
from nas.engine import device
from nas.errors import SearchError
from nas.space.references import by_name


def test_auto_falls_back_to_the_cpu_and_a_missing_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert device.resolve_device("auto") == torch.device("cpu")
    for name in ("cuda", "mps"):
        with pytest.raises(SearchError, match=f"--device {name}"):
            device.resolve_device(name)


def test_one_worker_per_core_on_a_cpu_one_on_an_accelerator(monkeypatch):
    monkeypatch.setattr(device.os, "cpu_count", lambda: 6)
    assert device.default_jobs(torch.device("cpu")) == 6
    assert device.default_jobs(torch.device("cuda")) == 1


def test_data_and_models_are_placed_channels_last(toy):
    splits = data_mod.to_device(toy, torch.device("cpu"))
    assert splits.x_train.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(splits.x_train, toy.x_train) and torch.equal(splits.y_test, toy.y_test)
    model = device.prepare_model(by_name("R2"), seed=0, device=torch.device("cpu"))
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
