"""Exact size and cost of a spec, known before any training.

Both come from building the spec on the `meta` device, which allocates no storage, so the count is
the same `sum(p.numel())` the trained model has, with no second hand-written formula to drift. Counting
reuses each distinct layer's meta-built count, which keeps a check well under a millisecond.
"""
from __future__ import annotations

import functools

import torch
from torch.utils.flop_counter import FlopCounterMode

from nas.build import ParamCount, build, counting
from nas.spec import ArchSpec


def _meta_model(spec: ArchSpec):
    return build(spec, seed=None, device="meta")


@functools.lru_cache(maxsize=4096)  # specs are frozen and hashable; the width search asks for the same ones often
def count_params(spec: ArchSpec) -> int:
    """Exactly `sum(p.numel())` of `build(spec)`: the same build, with each layer's count taken on `meta`."""
    with counting():
        net = build(spec, seed=None)
    return sum(m.n for m in net.modules() if isinstance(m, ParamCount))


def count_flops(spec: ArchSpec) -> int:
    """FLOPs of one forward pass of one image (a multiply-add counts as two)."""
    model = _meta_model(spec)
    x = torch.empty((1, *spec.input_shape), device="meta")
    with FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


def within_budget(params: int, max_params: int) -> bool:
    """The budget is a strict ceiling: a 25,000 budget admits at most 24,999 parameters."""
    return params < max_params
