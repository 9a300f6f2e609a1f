"""ArchSpec -> torch.nn.Module, by the build of each block kind in nas.space.blocks. Knows nothing of Optuna or training."""
from __future__ import annotations

import contextlib
import contextvars
import copy
import functools
import math

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from nas.space.blocks import Block, Conv, Pool, Shape
from nas.space.spec import ArchSpec, SpecError

_COUNTING = contextvars.ContextVar("counting", default=False)


class ParamCount(nn.Module):
    """Stands in for a parametrised layer while counting: holds that layer's exact parameter count."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n


@contextlib.contextmanager
def counting():
    """Within this, `build` puts ParamCount stubs where Conv2d, BatchNorm2d and Linear layers would go.

    Each stub's count comes from that very layer built on the meta device (once per distinct set of arguments),
    so the count and the real network come from the same code path.
    """
    token = _COUNTING.set(True)
    try:
        yield
    finally:
        _COUNTING.reset(token)


def _leaf(cls, *args, device=None, **kwargs) -> nn.Module:
    if _COUNTING.get():
        return ParamCount(_leaf_params(cls, args, tuple(sorted(kwargs.items()))))
    return cls(*args, device=device, **kwargs)


@functools.lru_cache(maxsize=None)
def _leaf_params(cls, args: tuple, kwargs: tuple) -> int:
    return sum(p.numel() for p in cls(*args, device="meta", **dict(kwargs)).parameters())


class Network(nn.Sequential):
    """A plain Sequential, named so that `print(model)` says what built it."""


def build(spec: ArchSpec, seed: int | None = 0, device: torch.device | str | None = None) -> Network:
    """Builds the module (on the CPU unless `device` says otherwise). The same seed gives the same weights."""
    if seed is None:
        return _build(spec, device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _build(spec, device)


def _build(spec: ArchSpec, device) -> Network:
    # The device goes to each layer's constructor: a `with torch.device(...)` mode would intercept every
    # torch call and make meta-device budget checks several times slower.
    modules, shape = _sequence(spec.blocks, tuple(spec.input_shape), "blocks", device)
    if shape != (spec.num_classes,):
        raise SpecError(f"the network ends with shape {shape}, expected ({spec.num_classes},) logits; "
                        "end with a head such as gap+linear, flatten+linear or a 1x1 conv to the classes then gap")
    return Network(*modules)


def layer_shapes(spec: ArchSpec) -> list[tuple[str, Shape]]:
    """(path, output shape) of every top-level block, for `describe`."""
    shape = tuple(spec.input_shape)
    rows = []
    for i, block in enumerate(spec.blocks):
        _, shape = _block(block, shape, f"blocks[{i}]", "meta")
        rows.append((f"blocks[{i}]", shape))
    return rows


def output_shape(block: Block, shape: Shape) -> Shape:
    """The shape `block` maps `shape` to, from its build with count stubs (no layer is made)."""
    with counting():
        return _block(block, shape, "block", None)[1]


def _sequence(blocks: tuple[Block, ...], shape: Shape, where: str, device) -> tuple[list[nn.Module], Shape]:
    modules = []
    for i, block in enumerate(blocks):
        module, shape = _block(block, shape, f"{where}[{i}]", device)
        if i and _relu_then_max_pool(blocks[i - 1], block):
            # max pool then ReLU: the same values and gradients (max and ReLU commute), with the ReLU on a map a
            # quarter the size. No parameters move, so state_dict keys stay as they were.
            modules[-1][-1] = nn.Identity()
            module = nn.Sequential(module, nn.ReLU(inplace=True))
        modules.append(module)
    return modules, shape


def _relu_then_max_pool(before: Block, block: Block) -> bool:
    return (isinstance(before, Conv) and before.act == "relu" and not before.dropout
            and isinstance(block, Pool) and block.op == "max")


def _block(block: Block, shape: Shape, where: str, device) -> tuple[nn.Module, Shape]:
    if not isinstance(block, Block):  # e.g. a spec built in Python around something else
        raise SpecError(f"{where}: unknown block {block!r}")
    if block.needs_map and len(shape) != 3:
        raise SpecError(f"{where}: {type(block).__name__} needs a feature map but gets a flat vector {shape}")
    return block.build(shape, _Context(where, device))


class _Context:
    """What a block's build gets from here: its path, parametrised layers (stubs while counting), nested blocks."""

    __slots__ = ("where", "device")

    def __init__(self, where: str, device):
        self.where, self.device = where, device

    def layer(self, cls: type[nn.Module], *args, **kwargs) -> nn.Module:
        return _leaf(cls, *args, device=self.device, **kwargs)

    def blocks(self, blocks: tuple[Block, ...], shape: Shape, part: str) -> tuple[list[nn.Module], Shape]:
        return _sequence(blocks, shape, f"{self.where}.{part}", self.device)

    def error(self, message: str) -> SpecError:
        return SpecError(f"{self.where}: {message}")


def inference_copy(model: nn.Module) -> nn.Module:
    """An eval-mode copy with the same outputs, computed faster: each BatchNorm folded into the conv before it
    (Conv.build puts it right after), and each max pool over non-overlapping windows taken by WindowMax."""
    fused = copy.deepcopy(model).eval()
    for module in fused.modules():
        if isinstance(module, nn.Sequential):
            for i in range(len(module)):
                followed_by_bn = i + 1 < len(module) and isinstance(module[i + 1], nn.BatchNorm2d)
                if isinstance(module[i], nn.Conv2d) and followed_by_bn:
                    module[i] = fuse_conv_bn_eval(module[i], module[i + 1])
                    module[i + 1] = nn.Identity()
                elif WindowMax.replaces(module[i]):
                    module[i] = WindowMax(module[i].kernel_size, module[i].ceil_mode)
    return fused


class WindowMax(nn.Module):
    """MaxPool2d(k) (stride k, no padding) as element-wise maxima over strided views: the same values, and
    measured faster on a CPU (max_pool2d also computes indices for a backward pass). For inference only: where
    values tie, its gradient would differ."""

    def __init__(self, k: int, ceil: bool):
        super().__init__()
        self.k, self.ceil = k, ceil

    @staticmethod
    def replaces(pool: nn.Module) -> bool:
        return (isinstance(pool, nn.MaxPool2d) and isinstance(pool.kernel_size, int) and pool.kernel_size > 1
                and pool.stride == pool.kernel_size and pool.padding == 0 and pool.dilation == 1
                and not pool.return_indices)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, (h, w) = self.k, x.shape[-2:]
        if self.ceil and (h % k or w % k):  # ceil mode keeps a last, partial window: pad it with -inf
            x = nn.functional.pad(x, (0, -w % k, 0, -h % k), value=-math.inf)
        else:
            x = x[..., :h - h % k, :w - w % k]
        rows = functools.reduce(torch.maximum, (x[..., i::k, :] for i in range(k)))
        return functools.reduce(torch.maximum, (rows[..., i::k] for i in range(k)))
