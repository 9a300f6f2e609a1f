from pathlib import Path

import optuna
import pytest
import torch
from safetensors.torch import load_file

from nas.deploy import export
from nas.space.budget import count_params
from nas.space.build import WindowMax, build, inference_copy
from nas.space.space_file import load_space
from nas.space.spec import ArchSpec, SpecError, TrainRecipe
from nas.space.blocks import Conv, Flatten, GlobalAvgPool, Linear, Pool, Residual
from nas.engine.train import train
from tests.conftest import REFERENCES, SPACE_FILES

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _space_samples():
    """A spread of candidates from every space file, drawn with a fixed random sampler."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = []
    for path in SPACE_FILES:
        space = load_space(path)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
        for i in range(6):
            trial = study.ask()
            out.append(pytest.param(space.sample(trial, 25_000).arch, id=f"{path.stem}-{i}"))
            study.tell(trial, 0.0)
    return out


ARCHS = [pytest.param(c.arch, id=name) for name, c in REFERENCES.items()] + _space_samples()


@pytest.mark.parametrize("arch", ARCHS)
def test_builds_forwards_and_every_parameter_learns(arch: ArchSpec):
    model = build(arch, seed=0)
    x = torch.randn(4, *arch.input_shape)
    out = model(x)
    assert out.shape == (4, arch.num_classes)
    out.logsumexp(1).sum().backward()
    # A conv bias right before BatchNorm gets an exactly-zero gradient (BN removes the mean), so the check is
    # that autograd reaches every parameter, and that the weights themselves get a non-zero signal.
    assert not [n for n, p in model.named_parameters() if p.grad is None]
    assert not [n for n, p in model.named_parameters() if n.endswith("weight") and not torch.any(p.grad != 0)]
    assert count_params(arch) == sum(p.numel() for p in model.parameters())


def test_same_seed_same_weights():
    arch = REFERENCES["R2"].arch
    a, b, c = build(arch, seed=3), build(arch, seed=3), build(arch, seed=4)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))


@pytest.mark.parametrize("arch, match", [
    (ArchSpec(blocks=(Conv(8),)), "logits"),
    (ArchSpec(blocks=(Flatten(), Conv(8))), "feature map"),
    (ArchSpec(blocks=(Residual(body=(Conv(8),)), Flatten(), Linear(10))), "must match"),
    (ArchSpec(blocks=(Pool(), Pool(), Pool(), Pool(), Pool(), Pool(), Flatten(), Linear(10))), "cannot pool"),
    (ArchSpec(blocks=("conv", Flatten(), Linear(10))), "unknown block"),
])
def test_invalid_specs_are_refused(arch, match):
    with pytest.raises(SpecError, match=match):
        build(arch)
    with pytest.raises(SpecError, match=match):
        count_params(arch)


def test_a_weights_file_saved_before_the_block_registry_loads_with_the_same_outputs():
    """Saved by nas.deploy.export.save at commit bea7ec7: a network with every block kind, BatchNorm statistics moved
    by a forward pass, and the outputs it gave for `x`. Module structure and weight names must not change."""
    model = export.load(FIXTURES / "old_every_kind.safetensors")
    expected = load_file(FIXTURES / "old_every_kind.expected.safetensors")
    with torch.no_grad():  # not bit-equal: the thread count changes the order of float sums
        torch.testing.assert_close(model(expected["x"]), expected["y"], rtol=1e-5, atol=1e-6)


def test_evaluation_folds_batchnorm_and_swaps_max_pools_without_changing_outputs(toy):
    # 28 -> 14 -> 5 (k=3, ceil) -> 3 (k=2, ceil): even and odd maps
    spec = ArchSpec(blocks=(Conv(8, bn=True, act="relu"), Conv(8, k=3, depthwise=True, bias=False, bn=True), Pool(),
                            Conv(16, bn=True, act="relu"), Pool(k=3), Pool(), GlobalAvgPool(), Linear(10)))
    model = build(spec, seed=0)
    train(model, TrainRecipe(batch_size=32), toy)  # non-trivial running statistics
    model.eval()
    fused = inference_copy(model)
    for layer in (torch.nn.BatchNorm2d, torch.nn.MaxPool2d):
        assert not any(isinstance(m, layer) for m in fused.modules())
        assert any(isinstance(m, layer) for m in model.modules())  # the original is untouched
    with torch.no_grad():
        torch.testing.assert_close(fused(toy.x_test), model(toy.x_test), rtol=1e-4, atol=1e-4)


def test_relu_before_a_max_pool_runs_after_it_with_the_same_values_gradients_and_weight_names(toy, monkeypatch):
    from nas.space import build as build_mod

    spec = ArchSpec(blocks=(Conv(8, bn=True, act="relu"), Pool(), Conv(8, act="gelu"), Pool(), Flatten(), Linear(10)))
    models = {}
    for swapped in (True, False):
        if not swapped:
            monkeypatch.setattr(build_mod, "_relu_then_max_pool", lambda *blocks: False)
        model = build(spec, seed=0)
        loss = torch.nn.functional.cross_entropy(model(toy.x_train[:32]), toy.y_train[:32])
        loss.backward()
        models[swapped] = model, loss
    (swapped, loss), (plain, plain_loss) = models[True], models[False]
    assert isinstance(swapped[1][-1], torch.nn.ReLU) and isinstance(swapped[0][-1], torch.nn.Identity)
    assert isinstance(swapped[2][-1], torch.nn.GELU)  # GELU is not monotonic: a max pool does not commute with it
    assert list(swapped.state_dict()) == list(plain.state_dict())  # weights files saved before still load
    assert torch.equal(loss, plain_loss)
    for a, b in zip(swapped.parameters(), plain.parameters()):
        assert torch.equal(a.grad, b.grad)


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("ceil", [True, False])
@pytest.mark.parametrize("channels_last", [True, False])
def test_window_max_gives_max_pool_values_exactly(k, ceil, channels_last):
    for h, w in [(28, 28), (7, 7), (8, 5), (k, k + 1)]:
        x = torch.randn(3, 4, h, w)
        x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        expected = torch.nn.MaxPool2d(k, ceil_mode=ceil)(x)
        assert torch.equal(WindowMax(k, ceil)(x), expected), (h, w)
