"""The short-run training levers of issue 42 (recipe keys whiten, dirac, bn_momentum, bn_bias_lr, bn_freeze_scale,
muon_lr, lookahead, lr_batch): each builds and trains on a small subset, does what it says, and at its default value changes nothing."""
import dataclasses

import pytest
import torch
from torch import nn

from nas.space.blocks import Conv, Flatten, GlobalAvgPool, Linear, Pool
from nas.space.budget import count_params
from nas.space.build import build
from nas.space.spec import ArchSpec, SpecError, TrainRecipe
from nas.engine.levers import ConvMuon, Lookahead, muon_filters, prepare
from nas.engine.train import make_optimizer, make_schedule, train
from tests.conftest import REFERENCES, synthetic_splits

# a stem conv, a depthwise + pointwise pair and a plain conv, with BatchNorm throughout
NET = ArchSpec(blocks=(Conv(8, bn=True, act="relu"), Pool(), Conv(8, depthwise=True, bn=True, act="relu"),
                       Conv(12, k=1, bn=True, act="relu"), Pool(), Conv(12, bn=True, act="relu"), Flatten(),
                       Linear(10)))
BASE = TrainRecipe(optimizer="sgd", nesterov=True, lr=0.1, batch_size=16, schedule="onecycle", weight_decay=1e-4)
LEVERS = {"whiten trained": {"whiten": "trained"}, "whiten frozen": {"whiten": "frozen"}, "dirac": {"dirac": True}, "bn_momentum": {"bn_momentum": 0.4}, "bn_bias_lr": {"bn_bias_lr": 64.0},
          "bn_freeze_scale": {"bn_freeze_scale": True}, "muon_lr": {"muon_lr": 0.05},
          "lookahead": {"lookahead": 5}, "lr_batch": {"lr_batch": 8}}


def _bns(model):
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


@pytest.mark.parametrize("lever", LEVERS)
def test_each_lever_builds_and_trains_on_a_small_subset(lever):
    splits = synthetic_splits(n_train=256, n_val=64, n_test=64)
    result = train(build(NET, seed=0), dataclasses.replace(BASE, **LEVERS[lever]), splits, epochs=2, test=False)
    assert result.steps == 2 * 256 // 16 and 0 <= result.val_acc <= 1


def test_at_their_defaults_the_levers_change_nothing():
    model = build(NET, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prepare(model, BASE, synthetic_splits(n_train=32, n_val=8, n_test=8))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters()) and {bn.momentum for bn in _bns(model)} == {0.1}
    optimizer = make_optimizer(model, BASE)
    assert len(optimizer.param_groups) == 1 and optimizer.param_groups[0]["params"] == list(model.parameters())


def test_dirac_sets_identity_filters_in_the_full_convs_after_the_first():
    model = build(NET, seed=0)
    before = [m.weight.clone() for m in model.modules() if isinstance(m, nn.Conv2d)]
    prepare(model, TrainRecipe(dirac=True), synthetic_splits(n_train=32, n_val=8, n_test=8))
    first, depthwise, pointwise, last = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert torch.equal(first.weight, before[0]) and torch.equal(depthwise.weight, before[1])  # the first; grouped
    for conv, old in ((pointwise, before[2]), (last, before[3])):
        c = conv.in_channels
        x = torch.randn(2, c, 6, 6)
        identity = nn.functional.conv2d(x, conv.weight[:c], padding=conv.padding)
        torch.testing.assert_close(identity, x)  # the first in-channels filters pass their input through
        assert torch.equal(conv.weight[c:], old[c:])  # the rest keep their random init


def _first_conv(model):
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("how", ["trained", "frozen"])
def test_whitening_decorrelates_the_training_patches_and_still_counts(how):
    splits = synthetic_splits(n_train=64, n_val=16, n_test=16)
    model = build(NET, seed=0)
    random = _first_conv(model).weight.clone()
    prepare(model, dataclasses.replace(BASE, whiten=how), splits)
    conv = _first_conv(model)
    assert conv.weight.requires_grad == (how == "trained")
    # 9 eigenvectors for 3x3 grey patches, each with its negative: the 8 filters are the top 4 pairs
    torch.testing.assert_close(conv.weight[1::2], -conv.weight[0::2])
    out = nn.functional.conv2d(splits.x_train, conv.weight[0::2]).permute(0, 2, 3, 1).reshape(-1, 4)
    torch.testing.assert_close(out.T @ out / len(out), torch.eye(4), atol=1e-3, rtol=1e-2)  # white: unit covariance
    assert not torch.equal(conv.weight, random)
    assert sum(p.numel() for p in model.parameters()) == count_params(NET)


def _whitened_filters(data) -> torch.Tensor:
    """The first conv's filters of NET after frozen whitening from `data`."""
    model = build(NET, seed=0)
    prepare(model, dataclasses.replace(BASE, whiten="frozen"), data)
    return _first_conv(model).weight


def test_whitening_reads_only_the_training_images():
    splits = synthetic_splits(n_train=64, n_val=16, n_test=16)
    blank = dataclasses.replace(splits, x_val=torch.zeros_like(splits.x_val), x_test=torch.zeros_like(splits.x_test))
    assert torch.equal(_whitened_filters(splits), _whitened_filters(blank))


def test_whitening_reads_the_first_training_images_only(monkeypatch):
    monkeypatch.setattr("nas.engine.levers.WHITEN_IMAGES", 32)
    splits = synthetic_splits(n_train=64, n_val=16, n_test=16)
    later = dataclasses.replace(splits, x_train=torch.cat((splits.x_train[:32], torch.zeros_like(splits.x_train[32:]))))
    assert torch.equal(_whitened_filters(splits), _whitened_filters(later))


def test_whitening_a_grouped_first_conv_is_refused():
    spec = ArchSpec(blocks=(Conv(3, depthwise=True, bn=True, act="relu"), GlobalAvgPool(), Linear(10)),
                    input_shape=(3, 8, 8))
    splits = dataclasses.replace(synthetic_splits(n_train=32, n_val=8, n_test=8), x_train=torch.randn(32, 3, 8, 8))
    with pytest.raises(SpecError, match="whiten.*grouped"):
        prepare(build(spec, seed=0), dataclasses.replace(BASE, whiten="frozen"), splits)


def test_bn_momentum_sets_the_running_statistics_momentum():
    model = build(NET, seed=0)
    train(model, dataclasses.replace(BASE, bn_momentum=0.4), synthetic_splits(n_train=128, n_val=16, n_test=16),
          test=False)
    assert {bn.momentum for bn in _bns(model)} == {0.4}


def test_bn_biases_learn_at_their_own_rate_with_the_same_decay_per_step():
    model = build(NET, seed=0)
    recipe = dataclasses.replace(BASE, bn_bias_lr=64.0)
    optimizer = make_optimizer(model, recipe)
    schedule = make_schedule(optimizer, recipe, total_steps=20)
    rest, biases = optimizer.param_groups
    assert {id(p) for p in biases["params"]} == {id(bn.bias) for bn in _bns(model)}
    assert len(rest["params"]) + len(biases["params"]) == len(list(model.parameters()))
    for _ in range(10):  # the ratio holds all along OneCycle
        optimizer.step()
        schedule.step()
        assert biases["lr"] == pytest.approx(64 * rest["lr"])
        assert biases["lr"] * biases["weight_decay"] == pytest.approx(rest["lr"] * rest["weight_decay"])


def test_frozen_bn_scales_stay_at_one_and_still_count():
    model = build(NET, seed=0)
    splits = synthetic_splits(n_train=128, n_val=16, n_test=16)
    train(model, dataclasses.replace(BASE, bn_freeze_scale=True, weight_decay=1e-2), splits, test=False)
    for bn in _bns(model):
        assert not bn.weight.requires_grad and torch.equal(bn.weight, torch.ones_like(bn.weight))
        assert not torch.equal(bn.bias, torch.zeros_like(bn.bias))  # the biases still learn
    assert sum(p.numel() for p in model.parameters()) == count_params(NET)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) < count_params(NET)


def test_lr_batch_scales_every_groups_lr_linearly_to_the_batch_used():
    recipe = dataclasses.replace(BASE, lr=0.1, batch_size=32, lr_batch=16, bn_bias_lr=4.0, schedule="constant")
    groups = make_optimizer(build(NET, seed=0), recipe).param_groups
    assert [g["lr"] for g in groups] == pytest.approx([0.2, 0.8])
    same = dataclasses.replace(recipe, batch_size=16)  # stated for the batch it runs: the lr as given
    assert [g["lr"] for g in make_optimizer(build(NET, seed=0), same).param_groups] == pytest.approx([0.1, 0.4])


def test_lookahead_pulls_the_weights_to_their_slow_copy_more_as_the_run_goes_on_and_ends_on_it():
    model = build(NET, seed=0)
    lookahead = Lookahead(model, every=2, total=4)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    floats = [k for k, v in start.items() if v.dtype.is_floating_point]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    moved = {k: v.clone() for k, v in model.state_dict().items()}
    lookahead.step(1)  # not a pull step: nothing happens
    assert all(torch.equal(model.state_dict()[k], moved[k]) for k in floats)
    lookahead.step(2)
    decay = 0.95 ** 2 * (2 / 4) ** 3
    for k in floats:
        torch.testing.assert_close(model.state_dict()[k], start[k] + (moved[k] - start[k]) * (1 - decay))
    slow = {k: model.state_dict()[k].clone() for k in floats}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    lookahead.step(4)  # the last step: the network takes the slow copy as it is
    assert all(torch.equal(model.state_dict()[k], slow[k]) for k in floats)


def test_muon_trains_the_conv_filters_after_the_first_and_nothing_else(monkeypatch):
    model = build(NET, seed=0)
    recipe = dataclasses.replace(BASE, muon_lr=0.05)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    filters = muon_filters(model, recipe)
    assert [id(p) for p in filters] == [id(c.weight) for c in convs[1:]]
    assert not {id(p) for g in make_optimizer(model, recipe).param_groups for p in g["params"]} & set(map(id, filters))
    stepped = []
    monkeypatch.setattr(ConvMuon, "step", lambda self: stepped.append([m.data_ptr() for m in self.matrices]))
    before = {name: p.clone() for name, p in model.named_parameters()}
    # Muon's steps are skipped: the other optimizer must leave the filters alone and train all the rest
    train(model, recipe, synthetic_splits(n_train=128, n_val=16, n_test=16), test=False)
    assert stepped and stepped[0] == [f.data_ptr() for f in filters]  # Muon steps views of the filters themselves
    moved = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    by_muon = {name for name, p in model.named_parameters() if any(p is f for f in filters)}
    assert moved == set(before) - by_muon and by_muon


def test_muon_steps_each_filter_bank_as_a_matrix_whatever_its_memory_layout():
    """The trainer's networks are channels_last (nas.engine.device.prepare_model): the same step either way."""
    recipe = dataclasses.replace(BASE, muon_lr=0.05, schedule="constant")
    stepped = []
    for layout in (torch.contiguous_format, torch.channels_last):
        model = build(NET, seed=0).to(memory_format=layout)
        filters = muon_filters(model, recipe)
        before = [f.clone() for f in filters]
        muon = ConvMuon(filters, recipe, lambda optimizer: None)
        for f in filters:
            f.grad = torch.randn(f.shape, generator=torch.Generator().manual_seed(f.numel())).to(memory_format=layout)
        muon.step()
        assert all(not torch.equal(f, b) for f, b in zip(filters, before)) and all(f.grad is None for f in filters)
        stepped.append([f.detach().contiguous() for f in filters])
    for a, b in zip(*stepped):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("key, value", [("bn_momentum", 0.0), ("bn_momentum", 1.5), ("bn_bias_lr", 0.0),
                                        ("dirac", 1), ("bn_freeze_scale", "no"), ("whiten", "on"),
                                        ("muon_lr", -0.1), ("lookahead", -1), ("lookahead", 0.5),
                                        ("lr_batch", -16)])
def test_a_spec_with_a_bad_lever_value_is_refused(key, value):
    with pytest.raises(SpecError, match=f"recipe.{key}"):
        TrainRecipe.from_dict({key: value})


def test_specs_written_before_the_levers_read_with_them_off():
    for candidate in REFERENCES.values():
        recipe = candidate.recipe
        assert (recipe.whiten, recipe.dirac, recipe.bn_momentum, recipe.bn_bias_lr, recipe.bn_freeze_scale,
                recipe.muon_lr, recipe.lookahead, recipe.lr_batch) == ("off", False, 0.1, 1.0, False, 0.0, 0, 0)


OFF = {"whiten": '"off"', "dirac": "false", "bn_momentum": "0.1", "bn_bias_lr": "1.0", "bn_freeze_scale": "false",
       "muon_lr": "0.0", "lookahead": "0", "lr_batch": "0"}
ON_VALUES = {"whiten": '"frozen"', "dirac": "true", "bn_momentum": "0.4", "bn_bias_lr": "64.0",
             "bn_freeze_scale": "true", "muon_lr": "0.05", "lookahead": "5", "lr_batch": "1024"}


def _space_declaring(tmp_path, declared: dict):
    """The default space with each lever declared as `declared` says."""
    import re

    from nas.space.space_file import load_space
    from tests.conftest import write_space

    def edit(text):
        for key, value in declared.items():
            text = re.sub(rf"^{key} = \S+", f"{key} = {value}", text, flags=re.M)
        return text

    return load_space(write_space(tmp_path, edit))


@pytest.mark.parametrize("declared", [OFF, ON_VALUES], ids=["off", "on"])
def test_a_space_file_draws_the_levers_as_declared(tmp_path, declared):
    from optuna.trial import FixedTrial

    params = {"budget_fill": 0.5, "stem_convs": 1, "pools": 2, "block": "conv", "head": "gap", "width_growth": 1.2,
              "sgd_lr": 0.1, "warmup": 0.2, "weight_decay": 1e-4, "label_smoothing": 0.1, "ema": 0.0}
    recipe = _space_declaring(tmp_path, declared).sample(FixedTrial(params), 10_000).recipe
    drawn = (recipe.whiten, recipe.dirac, recipe.bn_momentum, recipe.bn_bias_lr, recipe.bn_freeze_scale, recipe.muon_lr,
             recipe.lookahead, recipe.lr_batch)
    assert drawn == (("frozen", True, 0.4, 64.0, True, 0.05, 5, 1024) if declared is ON_VALUES
                     else ("off", False, 0.1, 1.0, False, 0.0, 0, 0))


def test_the_levers_at_their_defaults_leave_ids_and_space_fingerprints_as_before(tmp_path):
    """Candidates and spaces that leave the levers off keep the ids and fingerprints they had before the levers: an
    off lever is left out of the recipe's JSON and of the space's fingerprint; an on lever is in both, and
    round-trips."""
    import dataclasses as dc

    from nas.engine.identity import space_fingerprint
    from nas.space.spec import LATER_KEYS, Candidate

    candidate = REFERENCES["R4"]
    assert not set(LATER_KEYS) & set(candidate.recipe.to_dict())
    on = dc.replace(candidate, recipe=dc.replace(candidate.recipe, bn_momentum=0.4))
    assert on.id != candidate.id and Candidate.from_json(on.to_json()) == on
    space = _space_declaring(tmp_path, OFF)
    before = dc.replace(space, recipe={k: v for k, v in space.recipe.items() if k not in LATER_KEYS})
    assert space_fingerprint(space) == space_fingerprint(before)
    changed = _space_declaring(tmp_path, {**OFF, "dirac": "true"})
    assert space_fingerprint(changed) != space_fingerprint(space)
