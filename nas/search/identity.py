"""The identity a study records, so that it resumes only with the settings, space, data and ceilings it was made
with."""
from __future__ import annotations

import hashlib
import json

from nas import data
from nas.search.ceilings import Ceilings
from nas.config import SearchConfig
from nas.space.space import SearchSpace
from nas.space.space_file import OPTIONAL


def space_fingerprint(space: SearchSpace) -> str:
    """A hash of what the space declares. An optional key left at its default is left out, so studies made from
    files written before the key existed still resume."""
    declared = {section: {k: v for k, v in getattr(space, section).items()
                          if OPTIONAL.get(section, {}).get(k, object()) != v} for section in ("arch", "recipe")}
    text = json.dumps({**declared, "max_mflops": space.max_mflops}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# what a study made before a label existed was made with (no device ceilings but the space's max_mflops)
ASSUMED_IDENTITY = {"val_size": data.LEGACY_VAL_SIZE, "max_peak_kb": None, "int8_memory": False,
                    "max_latency_ms": None, "max_arena_kb": None, "max_flash_kb": None}


def recorded_identity(attrs: dict) -> dict:
    """What a study's user attrs say it was made with, ASSUMED_IDENTITY filling the labels of older studies. A study
    with no labels was not made by a search (e.g. `baselines`) and says nothing."""
    return {**ASSUMED_IDENTITY, **attrs} if attrs else {}


def study_identity(config: SearchConfig, space: SearchSpace) -> dict:
    """What a study's trials were made with; a resumed study must match it. val_size comes first: a study labelled
    with any key but val_size predates it (labels are written in this order). `data_source` and `image_size` came
    last: a study made before them was made from a torchvision set's files at their own size, and is labelled so on
    resuming."""
    return {"val_size": data.VAL_SIZE, "space": space.name, "space_fingerprint": space_fingerprint(space),
            "max_params": config.max_params, "dataset": config.dataset, "epochs": config.epochs,
            "train_subset": config.train_subset, "data_source": data.source_of(config.dataset, config.data_dir),
            "image_size": config.image_size, **ceiling_identity(Ceilings.of(config, space)),
            **config.mode.labels()}


def ceiling_identity(ceilings: Ceilings) -> dict:
    """The effective device ceilings, so a study resumes only under the same ones. A study made before them lacks
    these labels; create_or_resume sets them, so it still resumes."""
    return {"max_mflops": ceilings.mflops, "max_peak_kb": ceilings.peak_kb, "int8_memory": ceilings.int8,
            "max_latency_ms": ceilings.latency_ms, "max_arena_kb": ceilings.arena_kb,
            "max_flash_kb": ceilings.flash_kb}
