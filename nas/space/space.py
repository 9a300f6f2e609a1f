"""Search spaces: declared ranges and choices -> `sample(trial) -> Candidate` (files are read by nas.space.space_file).

A declared value is fixed (a scalar), a choice (a list) or a range (a table with `low`, `high` and
optionally `log`). Sampling only calls `trial.suggest_*`, so `optuna.trial.FixedTrial` replays any
parameter dict.

Widths are budget-aware: the trial picks the shape and a `budget_fill` fraction, and the generator
takes the widest network of that shape whose exact parameter count is under that fraction of the
budget. Most proposals therefore fit whatever the budget, and the space scales with it.
Each key of the default space, and the measurement behind its default: docs/search-space.md.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from nas.space.layout import MNIST_CLASSES, MNIST_SHAPE, arch_for_width, widest_fit
from nas.space.spec import ArchSpec, Candidate, TrainRecipe

AUTO = "auto"
CONVS_PER_STAGE = (1, 4)  # the fewest and most units per stage that a space file may declare or a rule may give


def auto_convs_per_stage(max_params: int) -> int:
    """One more conv per stage each time the budget doubles from 2,500 params: 1 at 5k, 2 at 10k, 3 at 25k.

    A rule rather than a range, because TPE keeps the depth of its first good trials (docs/search-space.md).
    """
    lo, hi = CONVS_PER_STAGE
    return min(hi, max(lo, round(math.log2(max(1, max_params) / 2500))))


def auto_stages(max_params: int) -> int:
    """Three stages while they are one conv deep (up to about 7k params), two from two convs per stage.

    Evidence: docs/search-space.md.
    """
    return 3 if auto_convs_per_stage(max_params) == 1 else 2


def auto_pools(max_params: int) -> int:
    """Two 2x2 pools, and a third before the head once stages are three convs deep (25k).

    An option; the default space searches [2, 3] instead (docs/search-space.md).
    """
    return 3 if auto_convs_per_stage(max_params) >= 3 else 2


def auto_stem_convs(max_params: int) -> int:
    """One stem conv, and a second once stages are three convs deep (25k).

    An option; the default space searches [1, 2] instead (docs/search-space.md).
    """
    return 2 if auto_convs_per_stage(max_params) >= 3 else 1


# keys whose declaration may also be "auto": set from the budget by these rules
AUTO_RULES = {"stem_convs": auto_stem_convs, "stages": auto_stages, "convs_per_stage": auto_convs_per_stage,
              "pools": auto_pools}


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    log: bool = False


@dataclass
class SearchSpace:
    name: str
    path: Path
    arch: dict[str, Any]
    recipe: dict[str, Any]
    max_mflops: float | None = None  # a compute ceiling per image forward pass; keeps one-epoch trials short

    def sample(self, trial, max_params: int, input_shape: tuple[int, int, int] = MNIST_SHAPE,
               classes: int = MNIST_CLASSES, fits: Callable[[ArchSpec], bool] | None = None,
               auto_by_size: bool = False) -> Candidate:
        """A candidate for images of `input_shape` (C, H, W) in `classes` classes. The trial's parameters are the
        same whatever the data: `pools` means what it does at 28x28 and follows the resolution (resolution_pools).
        `fits`, the device ceilings (nas.engine.ceilings.Ceilings.fits_devices): the widest network that also meets them.
        `auto_by_size`: the "auto" rules read the candidate's own size (budget_fill x max_params) rather than
        max_params, so each gets the shape a search with that budget would give it (the pareto mode's ceiling is no
        budget)."""
        arch = self._arch(trial, max_params, input_shape, classes, fits, auto_by_size)
        return Candidate(arch=arch, recipe=self._recipe(trial))

    # -- architecture ---------------------------------------------------------------------------
    def _arch(self, trial, max_params: int, input_shape: tuple[int, int, int], classes: int,
              fits: Callable[[ArchSpec], bool] | None = None, auto_by_size: bool = False) -> ArchSpec:
        fill = _suggest(trial, {"budget_fill": _log_scaled(self.arch["budget_fill"])}, "budget_fill") \
            if auto_by_size else None
        a = functools.partial(_suggest, trial, self._for_budget(max_params if fill is None else
                                                                 math.floor(fill * max_params)))
        shape = dict(
            stem_convs=a("stem_convs"), stages=a("stages"), convs=a("convs_per_stage"), pools=a("pools"),
            pool_placement=a("pool_placement"),
            pool=a("pool"), block=a("block"), k=a("kernel"), bn=a("bn"), act=a("activation"), dropout=a("dropout"),
            residual=a("residual"), head=a("head"), growth=a("width_growth"),
        )
        shape["head_dropout"] = a("head_dropout") if shape["head"].startswith("flatten") else 0.0
        shape["head_hidden"] = a("head_hidden") if shape["head"] == "flatten_mlp" else 0
        shape["min_width"] = self.arch["min_width"]
        fill = a("budget_fill") if fill is None else fill
        return widest_fit(shape, math.floor(fill * max_params), self.arch["min_width"], self.arch["max_width"],
                          input_shape, classes, fits)

    def _for_budget(self, max_params: int) -> dict[str, Any]:
        """The arch declarations with each "auto" value replaced by what it means at this budget."""
        return {**self.arch, **{key: rule(max_params) for key, rule in AUTO_RULES.items() if self.arch[key] == AUTO}}

    # -- recipe ---------------------------------------------------------------------------------
    def _recipe(self, trial) -> TrainRecipe:
        r = functools.partial(_suggest, trial, self.recipe)
        opt = r("optimizer")
        schedule = r("schedule")
        return TrainRecipe(
            optimizer="sgd" if opt.startswith("sgd") else opt,
            nesterov=opt == "sgd_nesterov",
            lr=r("sgd_lr") if opt.startswith("sgd") else r("adam_lr"),
            momentum=r("momentum") if opt.startswith("sgd") else 0.0,
            schedule=schedule,
            warmup=r("warmup") if schedule == "onecycle" else TrainRecipe.warmup,
            cycle_momentum=r("cycle_momentum"),
            batch_size=r("batch_size"),
            weight_decay=r("weight_decay"),
            label_smoothing=r("label_smoothing"),
            grad_clip=r("grad_clip"),
            ema=r("ema"),
            whiten=r("whiten"),
            dirac=r("dirac"),
            bn_momentum=r("bn_momentum"),
            bn_bias_lr=r("bn_bias_lr"),
            bn_freeze_scale=r("bn_freeze_scale"),
            muon_lr=r("muon_lr"),
            lookahead=r("lookahead"),
            lr_batch=r("lr_batch"),
        )

    def smallest(self, measure: Callable[[ArchSpec], float], input_shape: tuple[int, int, int] = MNIST_SHAPE,
                 classes: int = MNIST_CLASSES) -> float:
        """The least `measure` (params, FLOPs, peak memory, latency) of the space's narrowest, shallowest networks
        for such data: the narrowest of each pool placement, block and head it offers, where the least differs."""
        return min(measure(spec) for spec in self._smallest_specs(input_shape, classes))

    def _smallest_specs(self, input_shape: tuple[int, int, int], classes: int) -> list[ArchSpec]:
        arch = self._for_budget(0)  # "auto" at the smallest budget: the fewest convs and pools
        shape = dict(stem_convs=_low(arch["stem_convs"]), stages=_low(arch["stages"]),
                     convs=_low(arch["convs_per_stage"]), pools=_high(arch["pools"]),
                     pool="max", k=_low(arch["kernel"]), bn=False, act="relu", dropout=0.0, residual="none",
                     growth=_low(arch["width_growth"]), head_dropout=0.0,
                     head_hidden=_low(arch["head_hidden"]), min_width=arch["min_width"])
        # params are the same wherever the pools go; FLOPs and memory are least with early pools
        return [arch_for_width({**shape, "pool_placement": placement, "block": block, "head": head},
                               arch["min_width"], input_shape, classes)
                for placement in _choices(arch["pool_placement"]) for block in _choices(arch["block"])
                for head in _choices(arch["head"])]


def _suggest(trial, section: dict[str, Any], key: str):
    decl = section[key]
    if isinstance(decl, Range):
        if isinstance(decl.low, int) and isinstance(decl.high, int):
            return trial.suggest_int(key, decl.low, decl.high, log=decl.log)
        return trial.suggest_float(key, decl.low, decl.high, log=decl.log)
    if isinstance(decl, list):
        return decl[0] if len(decl) == 1 else trial.suggest_categorical(key, decl)
    return decl


def _log_scaled(decl):
    """A size range drawn log-uniform: the pareto mode spreads its trials over orders of magnitude of size, where a
    dedicated search, drawing the range as declared, puts more of them near its budget."""
    return replace(decl, log=True) if isinstance(decl, Range) else decl


def _choices(decl) -> list:
    return decl if isinstance(decl, list) else [decl]


def _low(decl):
    return decl.low if isinstance(decl, Range) else min(_choices(decl))


def _high(decl):
    return decl.high if isinstance(decl, Range) else max(_choices(decl))
