"""nas.space.layout: a drawn network shape and a width laid out as an ArchSpec (stem, stages, pools, head), pools
following the input's resolution, and the widest width that fits a parameter target and the device ceilings."""
import pytest

from nas.space.budget import count_flops, count_params
from nas.space.layout import arch_for_width, resolution_pools, widest_fit
from nas.space.space_file import load_space
from nas.space.blocks import Conv, Residual
from tests.conftest import SPACE_FILES

BROAD = SPACE_FILES[0].parent / "mnist_broad.toml"


@pytest.mark.parametrize("pools, shape, expected", [
    (2, (1, 28, 28), 2), (3, (1, 28, 28), 3), (4, (3, 28, 28), 4),  # MNIST's size: as declared
    (2, (3, 20, 20), 2), (3, (3, 32, 32), 3), (3, (3, 39, 39), 3),  # about MNIST's size: as declared
    (2, (3, 40, 40), 3), (2, (3, 64, 64), 3), (4, (3, 64, 64), 5),  # 64 -> 32 -> 16 -> 8 -> 4 -> 2
    (2, (1, 16, 16), 1), (3, (1, 14, 14), 2), (2, (1, 13, 13), 1),  # one fewer per halving
    (2, (1, 9, 9), 0), (4, (1, 9, 9), 2), (4, (1, 8, 8), 2), (0, (1, 8, 8), 0),
    (4, (1, 5, 5), 1), (4, (1, 3, 3), 0),                            # never a map below 2x2
    (2, (3, 28, 64), 2), (2, (3, 64, 16), 1),                        # the smaller side decides
])
def test_pools_follow_the_resolution_and_never_leave_a_map_below_2x2(pools, shape, expected):
    assert resolution_pools(pools, shape) == expected


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


def test_early_pools_put_deep_stages_at_low_resolution():
    shape = dict(BASE, stem_convs=1, stages=3, convs=2, pools=2, block="conv", act="relu", residual="none",
                 head="gap", growth=1.5)
    early = arch_for_width(dict(shape, pool_placement="early"), 32)
    late = arch_for_width(dict(shape, pool_placement="late"), 32)
    assert _kinds(early.blocks)[:3] == ["Conv", "Pool", "Conv"]  # stem, pool, first stage
    assert _kinds(late.blocks)[-4:] == ["Conv", "Pool", "GlobalAvgPool", "Linear"]
    assert count_params(early) == count_params(late)  # same layers, only the resolution moves
    assert count_flops(early) < count_flops(late) / 2


def test_the_width_search_meets_the_device_ceilings_asking_them_once_when_the_param_widest_does():
    shape = dict(BASE, stem_convs=1, stages=2, convs=2, pools=2, block="conv", act="relu", residual="none",
                 head="gap", growth=1.5)
    free = widest_fit(shape, 20_000, 4, 256)
    asked = []
    assert widest_fit(shape, 20_000, 4, 256, fits=lambda spec: asked.append(spec) or True) == free
    assert asked == [free]
    ceiling = count_flops(free) * 0.5
    capped = widest_fit(shape, 20_000, 4, 256, fits=lambda spec: count_flops(spec) <= ceiling)
    wider = arch_for_width(shape, max(b.out for b in capped.blocks if isinstance(b, Conv)) + 1)
    assert count_flops(capped) <= ceiling < count_flops(wider)
