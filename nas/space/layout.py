"""A drawn network shape (depth, kernel, head, ...) and a width -> the ArchSpec it lays out, for any input size and
class count; `widest_fit` finds the widest that fits a parameter target and the device ceilings."""
from __future__ import annotations

import functools
import math
from typing import Callable

from nas.space.budget import count_params
from nas.space.spec import ArchSpec, Block
from nas.space.blocks import Conv, Dropout, Flatten, GlobalAvgPool, Linear, Pool, Residual

# the data the spaces were written for: space files declare `pools` for this size (see resolution_pools)
MNIST_SHAPE, MNIST_CLASSES = (1, 28, 28), 10

# [arch].block: the blocks of one step of a stage, from `conv` (Conv with the stage's kernel, bn and activation),
# the step's input and output widths, and the stage's dropout
STAGE_BLOCKS: dict[str, Callable[..., list[Block]]] = {
    "conv": lambda conv, c_in, c_out, drop: [conv(c_out, dropout=drop)],
    "separable": lambda conv, c_in, c_out, drop: [conv(c_in, depthwise=True), conv(c_out, k=1, dropout=drop)],
    "bottleneck": lambda conv, c_in, c_out, drop: [conv(max(1, c_out // 2), k=1), conv(c_out, dropout=drop)],
}


def widest_fit(shape: dict, target: int, min_width: int, max_width: int,
               input_shape: tuple[int, int, int] = MNIST_SHAPE, classes: int = MNIST_CLASSES,
               fits: Callable[[ArchSpec], bool] | None = None) -> ArchSpec:
    """The widest last-unit width in [min_width, max_width] whose network has fewer than `target` params and, if
    given, satisfies `fits` (the device ceilings).

    Params, FLOPs, activation memory and latency all grow with width, so binary searches find it: the widest under
    the exact param target first, then, only if that one breaks a device ceiling, the widest below it that meets them
    (FLOPs and latency cost far more to measure than params). Where even the narrowest network does not fit, that one
    is returned and the filter rejects it.
    """
    layout = functools.partial(arch_for_width, shape, input_shape=input_shape, classes=classes)
    widest = _widest(lambda width: count_params(layout(width)) < target, min_width, max_width)
    if fits is None or fits(layout(widest)):
        return layout(widest)
    return layout(_widest(lambda width: fits(layout(width)), min_width, widest - 1))


def _widest(ok: Callable[[int], bool], lo: int, hi: int) -> int:
    """The largest width in [lo, hi] that is `ok`, for an `ok` that holds up to some width and not beyond; `lo` if
    none is."""
    if hi < lo or not ok(lo):
        return lo
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def resolution_pools(pools: int, input_shape: tuple[int, int, int]) -> int:
    """How many 2x2 pools a network declared with `pools` (at 28x28, MNIST's size) gets for `input_shape`.

    One more per doubling of the smaller side from 28 and one fewer per halving (rounded), so the last maps stay
    about MNIST's 7x7 or 4x4: 64x64 pools 64->32->16->8 where 28x28 pools 28->14->7. Never a map below 2x2: 8x8
    pools at most twice. At 20x20 to 39x39 the declared count is kept; 28x28 networks are laid out as before.
    """
    side = min(input_shape[1:])
    shifted = max(0, pools + math.floor(math.log2(side / MNIST_SHAPE[1]) + 0.5))
    most = 0
    while side >= 4:  # a 2x2 pool (ceil mode) of a side of 4 or more leaves at least 2
        side, most = math.ceil(side / 2), most + 1
    return min(shifted, most)


def arch_for_width(shape: dict, width: int, input_shape: tuple[int, int, int] = MNIST_SHAPE,
                   classes: int = MNIST_CLASSES) -> ArchSpec:
    """Lays out stem, stages, pools and head for a given widest (last-unit) channel count, for images of
    `input_shape` (C, H, W) in `classes` classes.

    Earlier units are narrower by `growth` per unit, down to `min_width`: the budget goes to the deep,
    low-resolution layers where it buys the most, and even deep shapes fit small budgets.
    """
    n_units = 1 + shape["stages"]

    def channels(unit: int) -> int:
        return max(shape["min_width"], round(width / shape["growth"] ** (n_units - 1 - unit)))

    # a bias before BatchNorm is cancelled by its mean subtraction: those parameters would buy nothing
    conv = functools.partial(Conv, k=shape["k"], bn=shape["bn"], act=shape["act"], bias=not shape["bn"])
    units: list[list[Block]] = [[conv(channels(0), dropout=shape["dropout"]) for _ in range(shape["stem_convs"])]]
    c_in = channels(0)
    for unit in range(1, n_units):
        c_out = channels(unit)
        body: list[Block] = []
        for j in range(shape["convs"]):
            body += STAGE_BLOCKS[shape["block"]](conv, c_in if j == 0 else c_out, c_out, shape["dropout"])
        if shape["residual"] != "none":
            same = shape["residual"] == "identity" and c_in == c_out
            body = [Residual(body=tuple(body), shortcut=() if same else (Conv(c_out, k=1),))]
        units.append(body)
        c_in = c_out
    pools = min(resolution_pools(shape["pools"], input_shape), len(units))
    # "late": after the last `pools` units, so the early units keep full resolution (R4's layout); "early": after
    # the first ones, so deep networks spend their convolutions at 14x14 and 7x7, where they cost a quarter as much
    pooled = range(pools) if shape["pool_placement"] == "early" else range(len(units) - pools, len(units))
    blocks: list[Block] = []
    for i, unit in enumerate(units):
        blocks += unit
        if i in pooled:
            blocks.append(Pool(op=shape["pool"]))
    blocks += _head(shape, classes)
    return ArchSpec(blocks=tuple(blocks), input_shape=tuple(input_shape), num_classes=classes)


def _head(shape: dict, classes: int) -> list[Block]:
    head = shape["head"]
    if head == "gap":
        return [GlobalAvgPool(), Linear(classes)]
    if head == "conv1x1_gap":
        return [Conv(classes, k=1), GlobalAvgPool()]
    drop = [Dropout(shape["head_dropout"])] if shape["head_dropout"] else []
    if head == "flatten_linear":
        return [Flatten(), *drop, Linear(classes)]
    return [Flatten(), *drop, Linear(shape["head_hidden"], act=shape["act"]), *drop, Linear(classes)]
