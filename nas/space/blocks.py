"""The block kinds a network is made of, each declared once: its fields, its checks, how it builds and prints.

A kind is a frozen dataclass subclassing `Block`, registered under its JSON name with `@register`. `nas.space.spec`
reads and writes every kind from its fields (a `tuple[Block, ...]` field holds nested blocks), `nas.space.build` calls
its `build`, and `nas.space.budget` counts that same build with stub layers, and its activation memory with `peak`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, ClassVar, Iterator, Protocol

import torch
from torch import nn

ACTIVATIONS = ("none", "relu", "gelu", "silu")
POOL_KINDS = ("max", "avg")

Shape = tuple[int, ...]  # (C, H, W) for feature maps, (F,) once flattened

KINDS: dict[str, type[Block]] = {}  # JSON name -> block class, in declaration order

_ACTIVATION_LAYERS = {"none": nn.Identity, "relu": lambda: nn.ReLU(inplace=True), "gelu": nn.GELU, "silu": nn.SiLU}


class Context(Protocol):
    """What `nas.space.build` hands a block's `build`, so that this module needs nothing from it."""

    where: str  # the block's path in the spec, e.g. "blocks[3].body[0]", for error messages

    def layer(self, cls: type[nn.Module], *args, **kwargs) -> nn.Module:
        """A layer with parameters (Conv2d, BatchNorm2d, Linear): built on the network's device, or a count stub."""

    def blocks(self, blocks: tuple[Block, ...], shape: Shape, part: str) -> tuple[list[nn.Module], Shape]:
        """The modules and output shape of nested blocks, found at `{where}.{part}`."""

    def error(self, message: str) -> Exception:
        """The error to raise for a block that does not fit its input."""


# (blocks, input shape, values held) -> (output shape, peak values): nas.space.budget's walk over nested blocks
Nested = Callable[[tuple["Block", ...], Shape, int], tuple[Shape, int]]


class Block:
    """The base of every block kind."""

    kind: ClassVar[str]  # set by @register
    needs_map: ClassVar[bool] = False  # refuses a flat (F,) input
    in_place: ClassVar[bool] = False  # a deployed network computes it over its input: no second tensor

    def problems(self) -> Iterator[tuple[str, str]]:
        """(field, what is wrong) for each value out of its range; reading the spec has checked the types."""
        return iter(())

    def build(self, shape: Shape, ctx: Context) -> tuple[nn.Module, Shape]:
        """The module for an input of `shape`, and its output shape."""
        raise NotImplementedError

    def peak(self, shape: Shape, out: Shape, held: int, nested: Nested) -> int:
        """The most values alive at once while it maps `shape` to `out` at batch 1, `held` values of enclosing
        blocks staying alive meanwhile: its input and its output. BatchNorm folds into the conv before it, and
        activations and dropout work in place, so a block's own layers add nothing to that."""
        return held + math.prod(out) + (0 if self.in_place else math.prod(shape))

    def text(self) -> str:
        """One line for `describe`."""
        values = ", ".join(f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self))
        return f"{type(self).__name__.lower()}({values})"


def register(kind: str):
    """Declares a block kind under its JSON name."""
    def add(cls: type[Block]) -> type[Block]:
        if not (dataclasses.is_dataclass(cls) and issubclass(cls, Block)):
            raise TypeError(f"{cls.__name__}: a block kind is a dataclass subclassing Block")
        if kind in KINDS:
            raise ValueError(f"block kind {kind!r} is declared twice")
        cls.kind = kind
        KINDS[kind] = cls
        return cls
    return add


def describe(block: Block) -> str:
    """The one-line text of a block in `describe`'s table."""
    return block.text()


@register("conv")
@dataclass(frozen=True)
class Conv(Block):
    out: int
    k: int = 3
    stride: int = 1
    padding: int | None = None  # None: "same" padding, k // 2
    depthwise: bool = False  # groups = in_channels; `out` must be a multiple of them
    bias: bool = True
    bn: bool = False
    act: str = "none"
    dropout: float = 0.0

    needs_map = True

    def problems(self):
        yield from _choice(self, "act", ACTIVATIONS)
        yield from _fraction(self, "dropout")
        yield from _positive(self, "out", "k", "stride")

    def build(self, shape, ctx):
        c, h, w = shape
        pad = self.k // 2 if self.padding is None else self.padding
        groups = c if self.depthwise else 1
        if self.depthwise and self.out % c:
            raise ctx.error(f"a depthwise conv needs out ({self.out}) to be a multiple of its input channels ({c})")
        oh, ow = ((n + 2 * pad - self.k) // self.stride + 1 for n in (h, w))
        if oh < 1 or ow < 1:
            raise ctx.error(f"a {self.k}x{self.k} conv with padding {pad} does not fit a {h}x{w} map")
        # nas.space.build.inference_copy folds a BatchNorm into the conv right before it
        layers = [ctx.layer(nn.Conv2d, c, self.out, self.k, self.stride, pad, groups=groups, bias=self.bias)]
        if self.bn:
            layers.append(ctx.layer(nn.BatchNorm2d, self.out))
        if self.act != "none":
            layers.append(_ACTIVATION_LAYERS[self.act]())
        if self.dropout:
            layers.append(FastDropout(self.dropout))
        return _seq(layers), (self.out, oh, ow)


@register("pool")
@dataclass(frozen=True)
class Pool(Block):
    op: str = "max"
    k: int = 2
    ceil: bool = True  # so odd sizes shrink 7 -> 4 -> 2 rather than dropping a row

    needs_map = True

    def problems(self):
        yield from _choice(self, "op", POOL_KINDS)
        yield from _positive(self, "k")

    def build(self, shape, ctx):
        c, h, w = shape
        k = self.k
        if h < k or w < k:
            raise ctx.error(f"cannot pool a {h}x{w} map with a {k}x{k} window")
        cls = nn.MaxPool2d if self.op == "max" else nn.AvgPool2d
        size = (lambda n: math.ceil((n - k) / k) + 1) if self.ceil else (lambda n: (n - k) // k + 1)
        return cls(k, ceil_mode=self.ceil), (c, size(h), size(w))


@register("residual")
@dataclass(frozen=True)
class Residual(Block):
    body: tuple[Block, ...]
    shortcut: tuple[Block, ...] = ()  # empty: identity

    needs_map = True

    def build(self, shape, ctx):
        body, body_shape = ctx.blocks(self.body, shape, "body")
        short, short_shape = ctx.blocks(self.shortcut, shape, "shortcut")
        if body_shape != short_shape:
            raise ctx.error(f"body gives {body_shape} but shortcut gives {short_shape}; they must match to add")
        return ResidualBlock(nn.Sequential(*body), nn.Sequential(*short) if short else nn.Identity()), body_shape

    def peak(self, shape, out, held, nested):
        # the input stays alive while the body runs, the body's output while the shortcut runs; the add is in place
        body, body_peak = nested(self.body, shape, held + math.prod(shape))
        short, short_peak = nested(self.shortcut, shape, held + math.prod(body))
        return max(body_peak, short_peak, held + math.prod(body) + math.prod(short))

    def text(self):
        return f"residual({len(self.body)} body, {len(self.shortcut) or 'identity'} shortcut)"


@register("gap")
@dataclass(frozen=True)
class GlobalAvgPool(Block):
    """Averages each channel to one value and flattens."""

    needs_map = True

    def build(self, shape, ctx):
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), (shape[0],)


@register("flatten")
@dataclass(frozen=True)
class Flatten(Block):
    in_place = True  # a view
    def build(self, shape, ctx):
        return nn.Flatten(), (math.prod(shape),)


@register("linear")
@dataclass(frozen=True)
class Linear(Block):
    out: int
    act: str = "none"
    bias: bool = True

    def problems(self):
        yield from _choice(self, "act", ACTIVATIONS)
        yield from _positive(self, "out")

    def build(self, shape, ctx):
        if len(shape) != 1:
            raise ctx.error("linear needs a flat vector; add a flatten or gap block first")
        layers = [ctx.layer(nn.Linear, shape[0], self.out, bias=self.bias)]
        if self.act != "none":
            layers.append(_ACTIVATION_LAYERS[self.act]())
        return _seq(layers), (self.out,)


@register("dropout")
@dataclass(frozen=True)
class Dropout(Block):
    p: float

    in_place = True  # nothing at inference

    def problems(self):
        yield from _fraction(self, "p")

    def build(self, shape, ctx):
        return FastDropout(self.p), shape


# -- the modules blocks build -------------------------------------------------------------------------
class ResidualBlock(nn.Module):
    def __init__(self, body: nn.Module, shortcut: nn.Module):
        super().__init__()
        self.body = body
        self.shortcut = shortcut

    def forward(self, x):
        return self.body(x) + self.shortcut(x)


class FastDropout(nn.Dropout):
    """nn.Dropout with the mask drawn by `rand_like` on a CPU: the same distribution, kept because it measured
    faster than the `bernoulli_` of torch's CPU dropout (bench/RESULTS.md)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not 0 < self.p < 1 or x.device.type != "cpu":
            return super().forward(x)
        return x * ((torch.rand_like(x) >= self.p) * (1 / (1 - self.p)))


def _seq(layers: list[nn.Module]) -> nn.Module:
    return layers[0] if len(layers) == 1 else nn.Sequential(*layers)


# -- checks: each yields (field, what is wrong) -----------------------------------------------------
def _choice(block: Block, name: str, allowed: tuple) -> Iterator[tuple[str, str]]:
    value = getattr(block, name)
    if value not in allowed:
        yield name, f"{value!r} is not one of {list(allowed)}"


def _fraction(block: Block, name: str) -> Iterator[tuple[str, str]]:
    if not 0 <= getattr(block, name) < 1:
        yield name, "must lie in [0, 1)"


def _positive(block: Block, *names: str) -> Iterator[tuple[str, str]]:
    for name in names:
        if getattr(block, name) < 1:
            yield name, "must be a positive integer"
