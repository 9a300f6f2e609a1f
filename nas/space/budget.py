"""Exact size and cost of a spec, known before any training: parameters, FLOPs and peak activation memory.

Parameters and FLOPs come from building the spec on the `meta` device, which allocates no storage, so the count is
the same `sum(p.numel())` the trained model has, with no second hand-written formula to drift. Counting
reuses each distinct layer's meta-built count, which keeps a check well under a millisecond.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nas.space.build import ParamCount, build, counting, layer_shapes, output_shape
from nas.space.blocks import Block, Shape, describe
from nas.space.spec import ArchSpec

def _meta_model(spec: ArchSpec):
    return build(spec, seed=None, device="meta")


@functools.lru_cache(maxsize=4096)  # specs are frozen and hashable; the width search asks for the same ones often
def count_params(spec: ArchSpec) -> int:
    """Exactly `sum(p.numel())` of `build(spec)`: the same build, with each layer's count taken on `meta`."""
    with counting():
        net = build(spec, seed=None)
    return sum(m.n for m in net.modules() if isinstance(m, ParamCount))


@functools.lru_cache(maxsize=4096)
def count_flops(spec: ArchSpec) -> int:
    """FLOPs of one forward pass of one image (a multiply-add counts as two)."""
    return _flops(_meta_model(spec), torch.empty((1, *spec.input_shape), device="meta"))


def _flops(module: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        module(x)
    return int(counter.get_total_flops())


@functools.lru_cache(maxsize=4096)
def peak_activation_bytes(spec: ArchSpec, bytes_per_value: int = 4) -> int:
    """Peak activation memory of one image at batch 1: executing the blocks in order, the largest sum of the
    tensors alive at once (each block's `peak`: its input and its output, MCUNet's definition, plus what enclosing
    residual blocks hold). The input image counts; weights do not."""
    return _peak(spec.blocks, tuple(spec.input_shape), 0)[1] * bytes_per_value


def _peak(blocks: tuple[Block, ...], shape: Shape, held: int) -> tuple[Shape, int]:
    """(output shape, peak values alive) of running `blocks` on `shape` while `held` values stay alive."""
    peak = held + math.prod(shape)
    for block in blocks:
        out = output_shape(block, shape)
        peak = max(peak, block.peak(shape, out, held, _peak))
        shape = out
    return shape, peak


@dataclass(frozen=True)
class LayerCost:
    """One top-level block of a spec, for `describe`."""

    where: str
    block: str
    shape: tuple[int, ...]  # its output shape for one image
    params: int
    flops: int
    activation_bytes: int  # its output at fp32


def layer_costs(spec: ArchSpec) -> list[LayerCost]:
    """Each top-level block's output shape, parameters, FLOPs and output bytes at fp32."""
    model = _meta_model(spec)
    x = torch.empty((1, *spec.input_shape), device="meta")
    rows = []
    with torch.no_grad():
        for (where, shape), block, module in zip(layer_shapes(spec), spec.blocks, model.children()):
            flops = _flops(module, x)
            x = module(x)
            rows.append(LayerCost(where, describe(block), shape, sum(p.numel() for p in module.parameters()), flops,
                                  x.numel() * 4))
    return rows
