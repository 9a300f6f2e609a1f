"""nas.space.space: candidates drawn from a search space for a budget and the data's shape (the layout of a drawn
shape: tests/test_layout.py; reading space files: tests/test_space_file.py)."""
import hashlib
import statistics

import optuna
import pytest
import torch

from nas.space.budget import count_params
from nas.space.build import build, layer_shapes
from nas.space.space import auto_convs_per_stage, auto_pools, auto_stages, auto_stem_convs
from nas.space.space_file import load_space
from nas.space.blocks import Conv, Pool
from tests.conftest import SPACE_FILES, write_space

optuna.logging.set_verbosity(optuna.logging.WARNING)
DEFAULT = SPACE_FILES[0].parent / "mnist.toml"
BROAD = SPACE_FILES[0].parent / "mnist_broad.toml"


def _samples(path, budget, n, seed=0, data=None, trials=None):
    """`n` candidates drawn at random; `data` = (input_shape, classes), else MNIST's (the default)."""
    space = load_space(path)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(space.sample(trial, budget, *(data or ())))
        study.tell(trial, 0.0)
    if trials is not None:
        trials += study.trials
    return out


# (space file, budget) -> digests of the ids of 12 candidates drawn by RandomSampler(seed=1), and of the names and
# distributions of the Optuna parameters they used: recorded from the code before sampling took the data's shape
# (the default space's again when its budget_fill became uniform, and when its recipe took issue 42's levers)
COMMITTED_MNIST_SAMPLES = {
    ("mnist", 25000): ("26d6613837722d2b", "4c8fc51f9a5ef7d0"),
    ("mnist", 10000): ("018d28c851166e1d", "4c8fc51f9a5ef7d0"),
    ("mnist", 5000): ("9dfea52bd590cd7d", "4c8fc51f9a5ef7d0"),
    ("mnist_broad", 25000): ("225dc5e06176c03a", "09bced0917e6999f"),
    ("mnist_broad", 10000): ("eec00b78b0ac491e", "09bced0917e6999f"),
    ("mnist_broad", 5000): ("1d0a7b01bbb30744", "09bced0917e6999f"),
}


@pytest.mark.parametrize("stem, budget", sorted(COMMITTED_MNIST_SAMPLES))
def test_mnist_candidates_and_parameters_are_those_the_committed_code_sampled(stem, budget):
    """Stored MNIST studies resume: at 1x28x28 and 10 classes the same trial gives the same candidate (same id), from
    Optuna parameters of the same names and distributions, whether the shape is given or left to the default."""
    for data in (None, ((1, 28, 28), 10)):
        trials = []
        ids = [c.id for c in _samples(SPACE_FILES[0].parent / f"{stem}.toml", budget, 12, seed=1, data=data,
                                      trials=trials)]
        dists = sorted({f"{k}={optuna.distributions.distribution_to_json(d)}" for t in trials
                        for k, d in t.distributions.items()})
        assert (hashlib.sha256(" ".join(ids).encode()).hexdigest()[:16],
                hashlib.sha256("\n".join(dists).encode()).hexdigest()[:16]) == COMMITTED_MNIST_SAMPLES[stem, budget]


SIZES, CHANNELS, CLASSES = (8, 9, 13, 16, 28, 32, 48, 64), (1, 3), (2, 10, 100)


@pytest.mark.parametrize("classes", CLASSES)
@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("size", SIZES)
def test_sampled_networks_build_for_any_small_image_size_and_class_count(size, channels, classes):
    """Each space's candidates for such data build, map a batch to (N, classes) logits, keep every map at 2x2 or
    more (pools follow the resolution), and are counted exactly before training."""
    shape = (channels, size, size)
    seed = SIZES.index(size) * 10 + CHANNELS.index(channels) * 3 + CLASSES.index(classes)  # other draws per case
    for path in (DEFAULT, BROAD):
        (candidate,) = _samples(path, 25_000, 1, seed=seed, data=(shape, classes))
        arch = candidate.arch
        assert (arch.input_shape, arch.num_classes) == (shape, classes)
        model = build(arch, seed=0)
        assert model(torch.rand(3, *shape)).shape == (3, classes)
        assert count_params(arch) == sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert min(s[-1] for _, s in layer_shapes(arch) if len(s) == 3) >= min(2, size)


@pytest.mark.parametrize("shape, classes", [((1, 8, 8), 2), ((3, 8, 8), 100), ((3, 64, 64), 100), ((1, 64, 64), 2)])
def test_rejections_stay_rare_for_other_sizes_and_class_counts(shape, classes):
    for path in (DEFAULT, BROAD):
        counts = [count_params(c.arch) for c in _samples(path, 25_000, 20, data=(shape, classes))]
        assert sum(n >= 25_000 for n in counts) <= 2, (path.stem, counts)


def test_a_larger_image_gets_one_more_pool_for_the_same_trial():
    space = load_space()
    params = dict(stem_convs=1, pools=2, block="conv", head="gap", width_growth=1.2, budget_fill=0.9, sgd_lr=0.1,
                  warmup=0.3, weight_decay=1e-4, label_smoothing=0.1, ema=0.0)
    archs = {size: space.sample(optuna.trial.FixedTrial(params), 25_000, (3, size, size), 10).arch
             for size in (28, 64)}
    assert [sum(isinstance(b, Pool) for b in archs[size].blocks) for size in (28, 64)] == [2, 3]
    last_maps = [[s for _, s in layer_shapes(archs[size]) if len(s) == 3][-1][1:] for size in (28, 64)]
    assert last_maps == [(7, 7), (8, 8)]


def test_the_smallest_network_follows_the_channels_and_the_classes():
    space = load_space(DEFAULT)
    assert space.smallest(count_params) == space.smallest(count_params, (1, 28, 28), 10) == 270  # as before
    assert space.smallest(count_params, (3, 32, 32), 10) > 270
    assert space.smallest(count_params, (1, 28, 28), 100) > space.smallest(count_params, (1, 28, 28), 10) + 90 * 4


@pytest.mark.parametrize("path", SPACE_FILES, ids=lambda p: p.stem)
@pytest.mark.parametrize("budget", [25_000, 10_000, 5_000])
def test_budget_aware_sampling_mostly_fits_and_scales(path, budget):
    counts = [count_params(c.arch) for c in _samples(path, budget, 100)]
    fits = [c for c in counts if c < budget]
    assert len(fits) >= 0.7 * len(counts), f"only {len(fits)}/{len(counts)} fit {budget}"
    # widths follow the budget: the typical fitting network uses a good share of it
    assert statistics.median(fits) > 0.3 * budget


@pytest.mark.parametrize("budget, stem, stages, convs, pools",
                         [(5_000, 1, 3, 1, 2), (10_000, 1, 2, 2, 2), (25_000, 2, 2, 3, 3)])
def test_auto_depth_and_pools_follow_the_budget(tmp_path, budget, stem, stages, convs, pools):
    """ "auto" stem, stages, convs per stage and pools come from the budget (the default space sets stages and convs
    per stage so)."""
    default = load_space(DEFAULT).arch
    assert default["stages"] == default["convs_per_stage"] == "auto"
    space = load_space(write_space(tmp_path, lambda text: text.replace("stem_convs = [1, 2]", 'stem_convs = "auto"')
                                   .replace("pools = [2, 3]", 'pools = "auto"')))
    assert space.arch["stem_convs"] == space.arch["pools"] == "auto"
    assert (auto_stem_convs(budget), auto_stages(budget), auto_convs_per_stage(budget), auto_pools(budget)) == (
        stem, stages, convs, pools)
    trial = optuna.trial.FixedTrial(dict(block="conv", head="gap", width_growth=1.5, budget_fill=0.9,
                                         sgd_lr=0.1, warmup=0.3, weight_decay=1e-4, label_smoothing=0.1, ema=0.0))
    arch = space.sample(trial, budget).arch
    assert sum(isinstance(b, Conv) for b in arch.blocks) == stem + stages * convs
    assert sum(isinstance(b, Pool) for b in arch.blocks) == pools


@pytest.mark.parametrize("fill, by_size_depth", [(0.2, (3, 1)), (0.4, (2, 2)), (1.0, (2, 3))])
def test_auto_by_size_takes_the_depth_of_the_candidates_own_size(fill, by_size_depth):
    """The pareto mode's candidates get the depth a search with their own size as budget would give them
    (stages x convs per stage: 3 x 1 at 5k, 2 x 2 at 10k, 2 x 3 at 25k); the default mode's follow the budget."""
    params = dict(stem_convs=1, pools=2, block="conv", head="gap", width_growth=1.2, budget_fill=fill, sgd_lr=0.1,
                  warmup=0.3, weight_decay=1e-4, label_smoothing=0.1, ema=0.0)
    space = load_space(DEFAULT)

    def stage_convs(auto_by_size):
        arch = space.sample(optuna.trial.FixedTrial(params), 25_000, auto_by_size=auto_by_size).arch
        assert count_params(arch) <= fill * 25_000
        return sum(isinstance(b, Conv) for b in arch.blocks) - 1  # less the stem's

    stages, convs = by_size_depth
    assert stage_convs(auto_by_size=True) == stages * convs
    assert stage_convs(auto_by_size=False) == 2 * 3


@pytest.mark.parametrize("auto_by_size, log", [(False, False), (True, True)])
def test_a_search_draws_the_size_share_as_declared_and_the_pareto_mode_log_uniform(auto_by_size, log):
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    load_space(DEFAULT).sample(trial, 25_000, auto_by_size=auto_by_size)
    assert trial.distributions["budget_fill"] == optuna.distributions.FloatDistribution(0.15, 1.0, log=log)


def test_sampled_convs_before_batchnorm_have_no_bias():
    # a bias before BatchNorm is cancelled by it: its parameters would be budget spent on nothing
    convs = [b for c in _samples(DEFAULT, 25_000, 20) for b in c.arch.blocks if isinstance(b, Conv)]
    assert convs and all(c.bias != c.bn for c in convs)
    assert any(not c.bn for c in convs)  # the 1x1 conv head has no BatchNorm after it, so it keeps its bias


def test_smallest_network_is_small():
    assert load_space(DEFAULT).smallest(count_params) < 1_000


def test_fixed_trial_replays_a_sample():
    space = load_space()
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=5)).ask()
    first = space.sample(trial, 25_000)
    assert space.sample(optuna.trial.FixedTrial(trial.params), 25_000) == first


@pytest.mark.parametrize("dataset, image_size, data_dir, floor", [
    ("mnist", None, None, 270), ("fashion-mnist", None, None, 270),  # MNIST's own size: refused as before
    ("mnist", 16, None, 230), ("cifar100", None, None, 230), ("npz", None, "x.npz", 230),  # the least data can ask
])
def test_the_search_refuses_a_budget_below_the_smallest_network_for_the_least_the_data_can_be(dataset, image_size,
                                                                                              data_dir, floor):
    """Before the data is read (search.run, before any study), the floor is the smallest network for the least the
    data can be: one channel, 8x8, two classes, unless the set's own size is known."""
    from nas import run as search
    from nas.engine.ceilings import Ceilings
    from nas.config import SearchConfig
    from nas.errors import SearchError

    config = SearchConfig(dataset=dataset, image_size=image_size, data_dir=data_dir)
    assert load_space().smallest(count_params, *search.least_data(config)) == floor
    search.check_ceilings(load_space(), Ceilings(floor + 1), *search.least_data(config))
    with pytest.raises(SearchError, match=f"below the smallest network .* \\({floor:,} params\\)"):
        search.check_ceilings(load_space(), Ceilings(floor), *search.least_data(config))


