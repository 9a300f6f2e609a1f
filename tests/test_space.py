import statistics
from pathlib import Path

import optuna
import pytest

from nas.budget import count_flops, count_params
from nas.space import (SpaceError, arch_for_width, auto_convs_per_stage, auto_pools, auto_stages, auto_stem_convs,
                       load_space, parse_space)
from nas.spec import Conv, Flatten, GlobalAvgPool, Linear, Pool, Residual
from tests.conftest import SPACE_FILES

optuna.logging.set_verbosity(optuna.logging.WARNING)
DEFAULT = SPACE_FILES[0].parent / "mnist.toml"
BROAD = SPACE_FILES[0].parent / "mnist_broad.toml"


def _samples(path, budget, n, seed=0):
    space = load_space(path)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(space.sample(trial, budget))
        study.tell(trial, 0.0)
    return out


@pytest.mark.parametrize("path", SPACE_FILES, ids=lambda p: p.stem)
@pytest.mark.parametrize("budget", [25_000, 10_000, 5_000])
def test_budget_aware_sampling_mostly_fits_and_scales(path, budget):
    counts = [count_params(c.arch) for c in _samples(path, budget, 100)]
    fits = [c for c in counts if c < budget]
    assert len(fits) >= 0.7 * len(counts), f"only {len(fits)}/{len(counts)} fit {budget}"
    # widths follow the budget: the typical fitting network uses a good share of it
    assert statistics.median(fits) > 0.3 * budget


def _kinds(blocks):
    out = []
    for b in blocks:
        out.append(type(b).__name__)
        if isinstance(b, Residual):
            out += ["(", *_kinds(b.body), "|", *_kinds(b.shortcut), ")"]
    return out


BASE = dict(pool="max", pool_placement="late", k=3, bn=True, dropout=0.0, growth=1.0, head_dropout=0.0, head_hidden=16, min_width=4)


@pytest.mark.parametrize("name, shape", [
    ("R1", dict(BASE, stem_convs=1, stages=1, convs=1, pools=2, block="conv", act="relu", residual="none",
                head="flatten_linear", head_dropout=0.2)),
    ("R2", dict(BASE, stem_convs=2, stages=1, convs=1, pools=2, block="bottleneck", act="relu", residual="conv1x1",
                head="conv1x1_gap")),
    ("R4", dict(BASE, stem_convs=1, stages=6, convs=1, pools=4, block="conv", act="gelu", residual="none",
                head="flatten_mlp", head_dropout=0.15)),
])
def test_space_contains_the_reference_shapes(name, shape):
    """The generator lays out the same sequence of layer kinds as each hand-made reference network, and the broad
    space offers its choices (the default space fixes some of them to what wins in one epoch)."""
    from tests.conftest import REFERENCES

    generated = arch_for_width(shape, 8)
    assert _kinds(generated.blocks) == _kinds(REFERENCES[name].arch.blocks)
    space = load_space(BROAD)
    for key, value in (("block", shape["block"]), ("head", shape["head"]), ("residual", shape["residual"]),
                       ("activation", shape["act"])):
        assert value in space.arch[key]


def _write(tmp_path, text) -> Path:
    p = tmp_path / "space.toml"
    p.write_text(text)
    return p


def _default_text():
    return DEFAULT.read_text()


@pytest.mark.parametrize("edit, match", [
    (lambda t: t.replace("kernel = 3", "kernal = 3"), r"kernal"),
    (lambda t: t.replace("kernel = 3", "kernel = []"), r"kernel.*empty"),
    (lambda t: t.replace("width_growth = { low = 1.0, high = 1.5 }", "width_growth = { low = 1.5, high = 1.0 }"),
     r"width_growth.*above"),
    (lambda t: t.replace('activation = "relu"', 'activation = ["tanh"]'), r"activation"),
    (lambda t: t.replace("batch_size = 16", 'batch_size = ["big"]'), r"batch_size"),
    (lambda t: t.replace("[recipe]", "[recipes]"), r"recipes"),
    (lambda t: t + "\n[[oops", r"not valid TOML"),
    (lambda t: t.replace("kernel = 3", 'kernel = "auto"'), r"kernel.*expected int"),
])
def test_malformed_space_names_the_key(tmp_path, edit, match):
    with pytest.raises(SpaceError, match=match) as err:
        load_space(_write(tmp_path, edit(_default_text())))
    assert "\n" not in str(err.value)


def test_missing_space_file(tmp_path):
    with pytest.raises(SpaceError, match="not found"):
        load_space(tmp_path / "nope.toml")


@pytest.mark.parametrize("budget, stem, stages, convs, pools",
                         [(5_000, 1, 3, 1, 2), (10_000, 1, 2, 2, 2), (25_000, 2, 2, 3, 3)])
def test_auto_depth_and_pools_follow_the_budget(tmp_path, budget, stem, stages, convs, pools):
    """ "auto" stem, stages, convs per stage and pools come from the budget (the default space sets stages and convs
    per stage so)."""
    default = load_space(DEFAULT).arch
    assert default["stages"] == default["convs_per_stage"] == "auto"
    text = (_default_text().replace("stem_convs = [1, 2]", 'stem_convs = "auto"')
            .replace("pools = [2, 3]", 'pools = "auto"'))
    space = load_space(_write(tmp_path, text))
    assert space.arch["stem_convs"] == space.arch["pools"] == "auto"
    assert (auto_stem_convs(budget), auto_stages(budget), auto_convs_per_stage(budget), auto_pools(budget)) == (
        stem, stages, convs, pools)
    trial = optuna.trial.FixedTrial(dict(block="conv", head="gap", width_growth=1.5, budget_fill=0.9,
                                         sgd_lr=0.1, warmup=0.3, weight_decay=1e-4, label_smoothing=0.1, ema=0.0))
    arch = space.sample(trial, budget).arch
    assert sum(isinstance(b, Conv) for b in arch.blocks) == stem + stages * convs
    assert sum(isinstance(b, Pool) for b in arch.blocks) == pools


def test_sampled_convs_before_batchnorm_have_no_bias():
    # a bias before BatchNorm is cancelled by it: its parameters would be budget spent on nothing
    convs = [b for c in _samples(DEFAULT, 25_000, 20) for b in c.arch.blocks if isinstance(b, Conv)]
    assert convs and all(c.bias != c.bn for c in convs)
    assert any(not c.bn for c in convs)  # the 1x1 conv head has no BatchNorm after it, so it keeps its bias


def test_smallest_network_is_small():
    assert load_space(DEFAULT).smallest_params() < 1_000


def test_early_pools_put_deep_stages_at_low_resolution():
    shape = dict(BASE, stem_convs=1, stages=3, convs=2, pools=2, block="conv", act="relu", residual="none",
                 head="gap", growth=1.5)
    early = arch_for_width(dict(shape, pool_placement="early"), 32)
    late = arch_for_width(dict(shape, pool_placement="late"), 32)
    assert _kinds(early.blocks)[:3] == ["Conv", "Pool", "Conv"]  # stem, pool, first stage
    assert _kinds(late.blocks)[-4:] == ["Conv", "Pool", "GlobalAvgPool", "Linear"]
    assert count_params(early) == count_params(late)  # same layers, only the resolution moves
    assert count_flops(early) < count_flops(late) / 2


def test_a_space_file_without_newer_keys_keeps_its_old_layout(tmp_path):
    newer = ("pool_placement", "cycle_momentum")
    text = "\n".join(line for line in _default_text().splitlines() if not line.startswith(newer))
    old = load_space(_write(tmp_path, text))
    assert (old.arch["pool_placement"], old.recipe["cycle_momentum"]) == ("late", True)
    default = load_space(DEFAULT)
    assert (default.arch["pool_placement"], default.recipe["cycle_momentum"]) == ("early", False)


def test_fixed_trial_replays_a_sample():
    space = load_space()
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=5)).ask()
    first = space.sample(trial, 25_000)
    assert space.sample(optuna.trial.FixedTrial(trial.params), 25_000) == first
