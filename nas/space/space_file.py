"""Reading a search space file: the keys it may hold, their types, allowed values and hard limits; anything else is
one line naming the file and the key. What each key does, and why its default: docs/search-space.md."""
from __future__ import annotations

import tomllib
from pathlib import Path

from nas.errors import UserError
from nas.space.layout import STAGE_BLOCKS
from nas.space.space import AUTO, AUTO_RULES, CONVS_PER_STAGE, Range, SearchSpace
from nas.space.blocks import ACTIVATIONS
from nas.space.spec import WHITENINGS

SPACES_DIR = Path(__file__).resolve().parents[2] / "search_spaces"
DEFAULT_SPACE = SPACES_DIR / "mnist.toml"

# key -> (type, allowed values or None)
ARCH_KEYS: dict[str, tuple[type, tuple | None]] = {
    "stem_convs": (int, None),
    "stages": (int, None),
    "convs_per_stage": (int, None),
    "pools": (int, None),
    "pool_placement": (str, ("early", "late")),
    "pool": (str, ("max", "avg")),
    "block": (str, tuple(STAGE_BLOCKS)),
    "kernel": (int, (1, 3, 5, 7)),
    "bn": (bool, None),
    "activation": (str, ACTIVATIONS[1:]),
    "dropout": (float, None),
    "residual": (str, ("none", "identity", "conv1x1")),
    "head": (str, ("gap", "conv1x1_gap", "flatten_linear", "flatten_mlp")),
    "head_hidden": (int, None),
    "head_dropout": (float, None),
    "width_growth": (float, None),
    "budget_fill": (float, None),
    "min_width": (int, None),
    "max_width": (int, None),
}
RECIPE_KEYS: dict[str, tuple[type, tuple | None]] = {
    "optimizer": (str, ("sgd", "sgd_nesterov", "adam", "adamw")),
    "sgd_lr": (float, None),
    "adam_lr": (float, None),
    "momentum": (float, None),
    "schedule": (str, ("onecycle", "constant")),
    "cycle_momentum": (bool, None),
    "warmup": (float, None),
    "batch_size": (int, None),
    "weight_decay": (float, None),
    "label_smoothing": (float, None),
    "grad_clip": (float, None),
    "ema": (float, None),
    "whiten": (str, WHITENINGS),
    "dirac": (bool, None),
    "bn_momentum": (float, None),
    "bn_bias_lr": (float, None),
    "bn_freeze_scale": (bool, None),
    "muon_lr": (float, None),
    "lookahead": (int, None),
    "lr_batch": (int, None),
}
SECTIONS = {"arch": ARCH_KEYS, "recipe": RECIPE_KEYS}
# bounds that no declaration may leave, whatever the file says
_LIMITS = {"stem_convs": (1, 4), "stages": (0, 8), "convs_per_stage": CONVS_PER_STAGE, "pools": (0, 4),
           "dropout": (0, 0.9), "head_dropout": (0, 0.9), "head_hidden": (1, 4096), "width_growth": (0.5, 4),
           "budget_fill": (0.01, 1), "min_width": (1, 4096), "max_width": (1, 4096), "momentum": (0, 0.999),
           "warmup": (0.01, 0.99), "batch_size": (1, 65536), "sgd_lr": (1e-6, 10), "adam_lr": (1e-6, 10),
           "weight_decay": (0, 1), "label_smoothing": (0, 0.5), "grad_clip": (0, 1e6), "ema": (0, 0.9999),
           "bn_momentum": (0.001, 1), "bn_bias_lr": (0.01, 1000), "muon_lr": (0, 10),
           "lookahead": (0, 1000), "lr_batch": (0, 65536)}


class SpaceError(UserError, ValueError):
    """A malformed space file; the message names the file and the key."""


def load_space(path: str | Path | None = None) -> SearchSpace:
    path = Path(path) if path else DEFAULT_SPACE
    if not path.is_file():
        raise SpaceError(f"{path}: search space file not found")
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise SpaceError(f"{path}: cannot be read ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise SpaceError(f"{path}: not valid TOML ({e})") from None
    return parse_space(raw, path)


def parse_space(raw: dict, path: Path) -> SearchSpace:
    unknown = sorted(set(raw) - {"name", "max_mflops", *SECTIONS})
    if unknown:
        raise SpaceError(f"{path}: unknown key {unknown[0]!r}; allowed top-level keys are name, max_mflops, arch, recipe")
    parsed = {}
    for section, keys in SECTIONS.items():
        table = raw.get(section)
        if not isinstance(table, dict):
            raise SpaceError(f"{path}: missing table [{section}]")
        bad = sorted(set(table) - set(keys))
        if bad:
            raise SpaceError(f"{path}: [{section}].{bad[0]!r} is not a known key; allowed: {', '.join(keys)}")
        missing = sorted(set(keys) - set(table))
        if missing:
            raise SpaceError(f"{path}: [{section}].{missing[0]} is missing")
        parsed[section] = {k: _parse_value(table[k], *keys[k], f"{path}: [{section}].{k}", k) for k in keys}
    arch = parsed["arch"]
    for key in ("min_width", "max_width"):
        if not isinstance(arch[key], int):
            raise SpaceError(f"{path}: [arch].{key} must be a single integer")
    if arch["min_width"] > arch["max_width"]:
        raise SpaceError(f"{path}: [arch].min_width is above max_width")
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not name:
        raise SpaceError(f"{path}: name must be a non-empty string")
    max_mflops = raw.get("max_mflops")
    if max_mflops is not None and (isinstance(max_mflops, bool) or not isinstance(max_mflops, (int, float))
                                   or max_mflops <= 0):
        raise SpaceError(f"{path}: max_mflops must be a positive number, got {max_mflops!r}")
    return SearchSpace(name=name, path=path, arch=arch, recipe=parsed["recipe"], max_mflops=max_mflops)


def _parse_value(value, typ: type, allowed: tuple | None, where: str, key: str):
    if value == AUTO and key in AUTO_RULES:
        return AUTO
    if isinstance(value, dict):
        if typ not in (int, float):
            raise SpaceError(f"{where}: a range needs a numeric key; give a list of choices instead")
        extra = sorted(set(value) - {"low", "high", "log"})
        if extra or "low" not in value or "high" not in value:
            raise SpaceError(f"{where}: a range is {{ low = ..., high = ..., log = false }}")
        low, high = (_check_type(value[b], typ, allowed, f"{where}.{b}", key) for b in ("low", "high"))
        if low > high:
            raise SpaceError(f"{where}: low ({low}) is above high ({high})")
        log = value.get("log", False)
        if not isinstance(log, bool):
            raise SpaceError(f"{where}.log: must be true or false")
        if log and low <= 0:
            raise SpaceError(f"{where}: a log range needs low > 0")
        return Range(low, high, log)
    if isinstance(value, list):
        if not value:
            raise SpaceError(f"{where}: the list of choices is empty")
        return [_check_type(v, typ, allowed, where, key) for v in value]
    return _check_type(value, typ, allowed, where, key)


def _check_type(value, typ: type, allowed: tuple | None, where: str, key: str):
    ok = (isinstance(value, bool) if typ is bool else
          isinstance(value, int) and not isinstance(value, bool) if typ is int else
          isinstance(value, (int, float)) and not isinstance(value, bool) if typ is float else
          isinstance(value, typ))
    if not ok:
        raise SpaceError(f"{where}: expected {typ.__name__}, got {value!r}")
    if allowed is not None and value not in allowed:
        raise SpaceError(f"{where}: {value!r} is not one of {list(allowed)}")
    if key in _LIMITS:
        lo, hi = _LIMITS[key]
        if not lo <= value <= hi:
            raise SpaceError(f"{where}: {value!r} is outside [{lo}, {hi}]")
    return float(value) if typ is float else value
