"""Every registered block kind, through all that a kind declares: its fields, checks, build, count and text.

The tests are parametrised over `KINDS`, so a newly registered kind is covered once it has an example.
"""
import dataclasses
import json
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from nas.space import blocks
from nas.space.blocks import KINDS, Block, Conv, Dropout, FastDropout, Flatten, GlobalAvgPool, Linear, Pool, Residual, describe, register
from nas.space.budget import count_params
from nas.space.build import build
from nas.space.spec import ArchSpec, Candidate, SpecError

INPUT = (2, 12, 12)

# kind -> a small network using it, with non-default field values. Every parameter must get a non-zero gradient,
# so a conv followed by BatchNorm has no bias (BatchNorm removes the mean: that bias's gradient is zero but rounding).
EXAMPLES = {
    "conv": (Conv(6, k=5, stride=2, padding=1, bias=False, bn=True, act="silu", dropout=0.1),
             Conv(12, depthwise=True, act="relu"), GlobalAvgPool(), Linear(10)),
    "pool": (Conv(4, act="relu"), Pool(), Pool(op="avg", k=3, ceil=False), Flatten(), Linear(10)),
    "residual": (Conv(4), Residual(body=(Conv(4, act="gelu"), Conv(8)), shortcut=(Conv(8, k=1),)),
                 Residual(body=(Conv(8, act="relu"),)), GlobalAvgPool(), Linear(10)),
    "gap": (Conv(8, act="relu"), GlobalAvgPool(), Linear(10)),
    "flatten": (Conv(2, stride=4), Flatten(), Linear(10)),
    "linear": (Conv(2, stride=4), Flatten(), Linear(16, act="gelu", bias=False), Linear(10)),
    "dropout": (Conv(2, stride=4), Flatten(), Dropout(0.5), Linear(10)),
}

# (kind, field, bad value) for each kind with checks of its own
BAD_VALUES = [
    ("conv", "out", 0), ("conv", "k", 0), ("conv", "stride", 0), ("conv", "dropout", 1.5), ("conv", "act", "tanh"),
    ("pool", "op", "min"), ("pool", "k", 0),
    ("linear", "out", 0), ("linear", "act", "tanh"),
    ("dropout", "p", 1.5), ("dropout", "p", -0.1),
]

# (kind, field, another value) for every field of every kind: the first block of that kind in its example, with the
# field changed, must build a different network
VARIANTS = [
    ("conv", "out", 12), ("conv", "k", 3), ("conv", "stride", 1), ("conv", "padding", None),
    ("conv", "depthwise", True), ("conv", "bias", True), ("conv", "bn", False), ("conv", "act", "relu"),
    ("conv", "dropout", 0.2),
    ("pool", "op", "avg"), ("pool", "k", 3), ("pool", "ceil", False),
    ("residual", "body", (Conv(8, k=1),)), ("residual", "shortcut", (Conv(8, k=3),)),
    ("linear", "out", 17), ("linear", "act", "relu"), ("linear", "bias", True),
    ("dropout", "p", 0.25),
]


def example(kind: str) -> ArchSpec:
    return ArchSpec(blocks=EXAMPLES[kind], input_shape=INPUT)


def _all_blocks(items: tuple[Block, ...]):
    """Every block, nested ones (a residual's body and shortcut) included."""
    for block in items:
        yield block
        for f in dataclasses.fields(block):
            if isinstance(getattr(block, f.name), tuple):
                yield from _all_blocks(getattr(block, f.name))


def test_every_kind_has_an_example():
    assert set(EXAMPLES) == set(KINDS)
    for kind, items in EXAMPLES.items():
        assert any(isinstance(b, KINDS[kind]) for b in _all_blocks(items)), kind


def test_every_kind_with_checks_has_bad_values():
    checked = {kind for kind, cls in KINDS.items() if cls.problems is not Block.problems}
    assert checked == {kind for kind, _, _ in BAD_VALUES}


def test_every_field_of_every_kind_has_a_variant():
    fields = {(kind, f.name) for kind, cls in KINDS.items() for f in dataclasses.fields(cls)}
    assert fields == {(kind, name) for kind, name, _ in VARIANTS}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_builds_forwards_and_every_parameter_learns(kind):
    spec = example(kind)
    model = build(spec, seed=0)
    x, y = torch.randn(4, *INPUT), torch.randint(0, spec.num_classes, (4,))
    out = model(x)
    assert out.shape == (4, spec.num_classes)
    nn.functional.cross_entropy(out, y).backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]


@pytest.mark.parametrize("kind, name, value", VARIANTS)
def test_every_field_changes_the_built_network(kind, name, value):
    items = EXAMPLES[kind]
    i = next(i for i, b in enumerate(items) if isinstance(b, KINDS[kind]))
    changed = items[:i] + (dataclasses.replace(items[i], **{name: value}),) + items[i + 1:]
    a, b = (build(ArchSpec(blocks=blocks, input_shape=INPUT), seed=0).eval() for blocks in (items, changed))
    x = torch.randn(2, *INPUT)
    with torch.no_grad():
        same = repr(a) == repr(b) and torch.equal(a(x), b(x))
    assert not same, f"{kind}.{name} = {value!r} builds the same network: the build ignores the field"


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_meta_device_count_is_the_built_count(kind):
    spec = example(kind)
    assert count_params(spec) == sum(p.numel() for p in build(spec).parameters())


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_json_round_trips(kind):
    spec = example(kind)
    d = json.loads(json.dumps(spec.to_dict()))
    assert kind in {b["kind"] for b in d["blocks"]}
    assert ArchSpec.from_dict(d) == spec
    candidate = Candidate(spec)
    assert Candidate.from_json(candidate.to_json()) == candidate


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_describe_names_the_kind(kind):
    for block in _all_blocks(EXAMPLES[kind]):
        assert describe(block).startswith(type(block).__name__.lower() + "(")


@pytest.mark.parametrize("kind, name, value", BAD_VALUES)
def test_bad_values_read_from_json_are_spec_errors(kind, name, value):
    d = example(kind).to_dict()
    i = next(i for i, b in enumerate(d["blocks"]) if b["kind"] == kind)
    d["blocks"][i][name] = value
    with pytest.raises(SpecError, match=rf"^arch\.blocks\[{i}\]\.{name}: "):
        ArchSpec.from_dict(d)


def test_register_refuses_a_duplicate_name_and_a_class_that_is_no_block_dataclass():
    with pytest.raises(ValueError, match="'conv' is declared twice"):
        register("conv")(dataclass(frozen=True)(type("Other", (Block,), {})))
    with pytest.raises(TypeError, match="dataclass subclassing Block"):
        register("plain")(type("Plain", (Block,), {}))
    with pytest.raises(TypeError, match="dataclass subclassing Block"):
        register("unrelated")(dataclass(frozen=True)(type("Unrelated", (), {})))
    assert KINDS["conv"] is Conv and not {"plain", "unrelated"} & set(KINDS)


def test_a_kind_declared_in_one_place_is_read_checked_built_counted_and_printed():
    @dataclass(frozen=True)
    class Squeeze(Block):
        """A linear map down to `width` features and back up."""
        width: int

        def problems(self):
            yield from blocks._positive(self, "width")

        def build(self, shape, ctx):
            down, up = ctx.layer(nn.Linear, shape[0], self.width), ctx.layer(nn.Linear, self.width, shape[0])
            return nn.Sequential(down, up), shape

    register("squeeze")(Squeeze)
    try:
        d = ArchSpec(blocks=(Flatten(), Squeeze(3), Linear(10)), input_shape=INPUT).to_dict()
        assert d["blocks"][1] == {"kind": "squeeze", "width": 3}
        spec = ArchSpec.from_dict(d)
        built = sum(p.numel() for p in build(spec).parameters())
        assert count_params(spec) == built == (288 * 3 + 3) + (3 * 288 + 288) + (288 * 10 + 10)
        assert describe(spec.blocks[1]) == "squeeze(width=3)"
        d["blocks"][1]["width"] = 0
        with pytest.raises(SpecError, match=r"blocks\[1\]\.width: must be a positive integer"):
            ArchSpec.from_dict(d)
    finally:
        del KINDS["squeeze"]


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_dropout_keeps_each_element_with_probability_1_minus_p_scaled_up(p):
    layer, x = FastDropout(p), torch.ones(400, 1000)
    kept = layer(x)
    assert kept.unique().tolist() == [0.0, pytest.approx(1 / (1 - p))]
    assert (kept == 0).float().mean().item() == pytest.approx(p, abs=0.005)  # 400k draws: sd 0.0008
    assert torch.equal(layer.eval()(x), x)
