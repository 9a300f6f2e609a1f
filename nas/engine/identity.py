"""The identity a study records, so that it resumes only with the settings, space, data and ceilings it was made
with."""
from __future__ import annotations

import hashlib
import json

from nas import data
from nas.engine.ceilings import Ceilings
from nas.config import SearchConfig
from nas.space.space import SearchSpace
from nas.space.spec import LATER_KEYS, TrainRecipe


def space_fingerprint(space: SearchSpace) -> str:
    """A hash of what the space declares; a later recipe key declared at its default, which changes nothing, is left
    out, so studies stored before it existed still resume."""
    recipe = {k: v for k, v in space.recipe.items() if k not in LATER_KEYS or v != getattr(TrainRecipe, k)}
    text = json.dumps({"arch": space.arch, "recipe": recipe, "max_mflops": space.max_mflops}, sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def study_identity(config: SearchConfig, space: SearchSpace) -> dict:
    """What a study's trials were made with; a resumed study must match it."""
    return {"val_size": data.VAL_SIZE, "space": space.name, "space_fingerprint": space_fingerprint(space),
            "max_params": config.max_params, "dataset": config.dataset, "epochs": config.epochs,
            "train_subset": config.train_subset, "data_source": data.source_of(config.dataset, config.data_dir),
            "image_size": config.image_size, **ceiling_identity(Ceilings.of(config, space)),
            **config.mode.labels()}


def ceiling_identity(ceilings: Ceilings) -> dict:
    """The effective device ceilings, so a study resumes only under the same ones."""
    return {"max_mflops": ceilings.mflops, "max_peak_kb": ceilings.peak_kb, "int8_memory": ceilings.int8,
            "max_latency_ms": ceilings.latency_ms, "max_arena_kb": ceilings.arena_kb,
            "max_flash_kb": ceilings.flash_kb}
