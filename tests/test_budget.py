import pytest
import torch
from optuna.trial import FixedTrial

from nas.budget import count_flops, count_params, within_budget
from nas.build import build
from nas.space import load_space
from nas.spec import ArchSpec, Conv, Flatten, Linear, Pool, Residual, SpecError
from tests.conftest import REFERENCES, SPACE_FILES

EXPECTED = {"R1": 20_586, "R2": 8_530, "R4": 23_398}


def _space_samples():
    """A spread of candidates from every space file, drawn with a fixed random sampler."""
    import optuna
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


def test_reference_counts_are_exact():
    assert {name: count_params(REFERENCES[name].arch) for name in EXPECTED} == EXPECTED


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


def test_flops_scale_with_resolution_not_params():
    small = ArchSpec(blocks=(Conv(8, act="relu"), Pool(), Pool(), Flatten(), Linear(10)), input_shape=(1, 28, 28))
    big = ArchSpec(blocks=(Conv(8, act="relu"), Pool(), Pool(), Flatten(), Linear(10)), input_shape=(1, 56, 56))
    # conv: 2 * 28*28 * 8 * 9 multiply-adds; linear: 2 * 392 * 10
    assert count_flops(small) == 2 * 28 * 28 * 8 * 9 + 2 * 392 * 10
    assert count_flops(big) > 3 * count_flops(small)


def test_budget_is_a_strict_ceiling():
    assert within_budget(24_999, 25_000)
    assert not within_budget(25_000, 25_000)


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
])
def test_invalid_specs_are_refused(arch, match):
    with pytest.raises(SpecError, match=match):
        count_params(arch)


def test_fixed_trial_replays_a_sample():
    space = load_space()
    import optuna
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=5))
    trial = study.ask()
    first = space.sample(trial, 25_000)
    assert space.sample(FixedTrial(trial.params), 25_000) == first
