"""Architecture specs: a complete, JSON-round-tripping description of a network and its recipe.

A spec is data. `nas.space.build` turns it into a module, `nas.space.budget` counts it, and each Optuna trial
stores its candidate's JSON so any trial can be rebuilt without re-running the sampler.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Union, get_args, get_origin, get_type_hints

from nas.space.blocks import KINDS as BLOCK_KINDS
from nas.space.blocks import Block
from nas.errors import UserError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "onecycle")
WHITENINGS = ("off", "trained", "frozen")
# recipe keys added after studies were stored (issue 42): at their default they change nothing, and they are left out
# of the JSON, so the ids and specs of candidates made before them stay the same
LATER_KEYS = ("whiten", "dirac", "bn_momentum", "bn_bias_lr", "bn_freeze_scale", "muon_lr", "lookahead", "lr_batch")


class SpecError(UserError, ValueError):  # still a ValueError, as before UserError existed
    """A spec that cannot describe a valid network or recipe."""


@dataclass(frozen=True)
class ArchSpec:
    blocks: tuple[Block, ...]
    input_shape: tuple[int, int, int] = (1, 28, 28)
    num_classes: int = 10

    def to_dict(self) -> dict:
        return {
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "blocks": [_block_to_dict(b) for b in self.blocks],
        }

    @classmethod
    def from_dict(cls, d: Any, where: str = "arch") -> "ArchSpec":
        d = _expect_table(d, where, required={"blocks"}, allowed={"blocks", "input_shape", "num_classes"})
        shape = d.get("input_shape", [1, 28, 28])
        if not (isinstance(shape, (list, tuple)) and len(shape) == 3 and all(_is_int(v) and v > 0 for v in shape)):
            raise SpecError(f"{where}.input_shape: expected three positive integers, got {shape!r}")
        classes = d.get("num_classes", 10)
        if not (_is_int(classes) and classes > 1):
            raise SpecError(f"{where}.num_classes: expected an integer > 1, got {classes!r}")
        return cls(blocks=_blocks_from_list(d["blocks"], f"{where}.blocks"), input_shape=tuple(shape), num_classes=classes)


@dataclass(frozen=True)
class TrainRecipe:
    optimizer: str = "sgd"
    lr: float = 0.05  # the peak LR under OneCycle
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    batch_size: int = 64
    schedule: str = "onecycle"
    warmup: float = 0.25  # OneCycle's pct_start
    # OneCycle also cycles momentum 0.95 -> 0.85 -> 0.95 against the LR in place of `momentum` (PyTorch's default,
    # so what the reference recipes ran); False keeps `momentum` fixed
    cycle_momentum: bool = True
    label_smoothing: float = 0.0
    grad_clip: float = 0.0  # max grad norm; 0 disables clipping
    ema: float = 0.0  # decay of an exponential moving average of the weights; 0 disables it
    # short-run levers (issue 42); these values leave the network and its training as they were
    whiten: str = "off"  # the first conv set to whiten the training images' patches, then "trained" or "frozen"
    dirac: bool = False  # identity init of the first in-channels filters of each full conv after the first
    bn_momentum: float = 0.1  # BatchNorm running-statistics momentum, PyTorch's convention (its default 0.1)
    bn_bias_lr: float = 1.0  # BatchNorm biases learn at lr x this, with weight decay / this (the same decay per step)
    bn_freeze_scale: bool = False  # BatchNorm scales stay at 1 (they still count as parameters)
    muon_lr: float = 0.0  # > 0: the conv filters after the first learn by Muon at this peak lr; 0 = off
    lookahead: int = 0  # > 0: every this many steps the weights are pulled to their slow average (airbench: 5)
    lr_batch: int = 0  # > 0: lr is stated for batches of this many examples, scaled linearly to batch_size

    def to_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items()
                if k not in LATER_KEYS or v != getattr(TrainRecipe, k)}

    @classmethod
    def from_dict(cls, d: Any, where: str = "recipe") -> "TrainRecipe":
        recipe = _dataclass_from_dict(cls, d, where)
        _check_choice(recipe.optimizer, OPTIMIZERS, f"{where}.optimizer")
        _check_choice(recipe.schedule, SCHEDULES, f"{where}.schedule")
        _check_choice(recipe.whiten, WHITENINGS, f"{where}.whiten")
        if not 0 < recipe.lr < math.inf or recipe.batch_size < 1:
            raise SpecError(f"{where}: lr and batch_size must be positive")
        if not 0 < recipe.warmup < 1:
            raise SpecError(f"{where}.warmup: must lie strictly between 0 and 1, got {recipe.warmup}")
        if not 0 <= recipe.ema < 1:
            raise SpecError(f"{where}.ema: must lie in [0, 1), got {recipe.ema}")
        if not 0 < recipe.bn_momentum <= 1:
            raise SpecError(f"{where}.bn_momentum: must lie in (0, 1], got {recipe.bn_momentum}")
        if not 0 < recipe.bn_bias_lr < math.inf:
            raise SpecError(f"{where}.bn_bias_lr: must be positive, got {recipe.bn_bias_lr}")
        if not 0 <= recipe.muon_lr < math.inf:
            raise SpecError(f"{where}.muon_lr: must be 0 (off) or positive, got {recipe.muon_lr}")
        for key in ("lookahead", "lr_batch"):
            if getattr(recipe, key) < 0:
                raise SpecError(f"{where}.{key}: must be 0 (off) or positive, got {getattr(recipe, key)}")
        return recipe


@dataclass(frozen=True)
class Candidate:
    arch: ArchSpec
    recipe: TrainRecipe = field(default_factory=TrainRecipe)
    name: str = ""  # set for reference models; not part of the id

    def to_dict(self) -> dict:
        d = {"arch": self.arch.to_dict(), "recipe": self.recipe.to_dict()}
        if self.name:
            d["name"] = self.name
        return d

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @property
    def id(self) -> str:
        """A stable id: the hash of the canonical JSON of architecture and recipe."""
        canonical = json.dumps({"arch": self.arch.to_dict(), "recipe": self.recipe.to_dict()},
                               sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls, d: Any, where: str = "candidate") -> "Candidate":
        # "data" (input shape, classes, normalisation) is written beside an export's spec; nas.deploy.export reads it
        d = _expect_table(d, where, required={"arch"}, allowed={"arch", "recipe", "name", "data"})
        name = d.get("name", "")
        if not isinstance(name, str):
            raise SpecError(f"{where}.name: expected a string")
        return cls(
            arch=ArchSpec.from_dict(d["arch"], f"{where}.arch"),
            recipe=TrainRecipe.from_dict(d.get("recipe", {}), f"{where}.recipe"),
            name=name,
        )

    @classmethod
    def from_json(cls, text: str, where: str = "candidate") -> "Candidate":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SpecError(f"{where}: not valid JSON ({e})") from None
        except RecursionError:
            raise SpecError(f"{where}: JSON nested too deeply to be a spec") from None
        return cls.from_dict(data, where)


def _block_to_dict(block: Block) -> dict:
    d: dict[str, Any] = {"kind": block.kind}
    for f in dataclasses.fields(block):
        value = getattr(block, f.name)
        nested = isinstance(value, tuple) and all(isinstance(b, Block) for b in value)  # a residual's body, say
        d[f.name] = [_block_to_dict(b) for b in value] if nested else value
    return d


def _blocks_from_list(items: Any, where: str) -> tuple[Block, ...]:
    if not isinstance(items, (list, tuple)):
        raise SpecError(f"{where}: expected a list of blocks")
    return tuple(_block_from_dict(item, f"{where}[{i}]") for i, item in enumerate(items))


def _block_from_dict(d: Any, where: str) -> Block:
    if not isinstance(d, dict) or "kind" not in d:
        raise SpecError(f"{where}: expected a table with a 'kind' key")
    kind = d["kind"]
    if kind not in BLOCK_KINDS:
        raise SpecError(f"{where}.kind: unknown block kind {kind!r}; expected one of {sorted(BLOCK_KINDS)}")
    block = _dataclass_from_dict(BLOCK_KINDS[kind], {k: v for k, v in d.items() if k != "kind"}, where)
    for name, problem in block.problems():
        raise SpecError(f"{where}.{name}: {problem}")
    return block


def _dataclass_from_dict(cls: type, d: Any, where: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    required = {n for n, f in fields.items()
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    d = _expect_table(d, where, required=required, allowed=set(fields))
    hints = _type_hints(cls)
    return cls(**{k: _coerce(v, hints[k], f"{where}.{k}") for k, v in d.items()})


_type_hints = functools.cache(get_type_hints)  # resolving string annotations is most of the time spent reading a spec


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Checks a JSON value against a field's type; ints are accepted where floats are expected."""
    if hint == tuple[Block, ...]:  # nested blocks, such as a residual's body
        return _blocks_from_list(value, where)
    options = get_args(hint) if get_origin(hint) is Union or type(hint).__name__ == "UnionType" else (hint,)
    for t in options:
        if t is type(None) and value is None:
            return None
        if t is bool and isinstance(value, bool):
            return value
        if t is int and _is_int(value):
            return value
        if t is float and (_is_int(value) or isinstance(value, float)):
            return float(value)
        if t is str and isinstance(value, str):
            return value
    names = "/".join(getattr(t, "__name__", str(t)) for t in options)
    raise SpecError(f"{where}: expected {names}, got {value!r}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _expect_table(d: Any, where: str, required: set[str], allowed: set[str]) -> dict:
    if not isinstance(d, dict):
        raise SpecError(f"{where}: expected a table/object, got {type(d).__name__}")
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise SpecError(f"{where}.{unknown[0]}: unknown key; allowed keys are {sorted(allowed)}")
    missing = sorted(required - set(d))
    if missing:
        raise SpecError(f"{where}.{missing[0]}: missing required key")
    return d


def _check_choice(value: Any, allowed: tuple, where: str) -> None:
    if value not in allowed:
        raise SpecError(f"{where}: {value!r} is not one of {list(allowed)}")
