"""The settings of one search, the study's default name, and the identity a study records to be resumed safely."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from nas import data
from nas.ceilings import Ceilings
from nas.space import SearchSpace
from nas.space_file import OPTIONAL


@dataclass
class SearchConfig:
    trials: int = 50
    space: str | None = None
    max_params: int = 25_000
    max_mflops: float | None = None  # None: the space's max_mflops
    max_peak_kb: float | None = None
    int8_memory: bool = False
    max_arena_kb: float | None = None  # TFLM's arena for the int8 model, head plus tail
    max_flash_kb: float | None = None  # the int8 .tflite file
    max_latency_ms: float | None = None
    study: str | None = None
    storage: str | None = None
    seed: int = 0
    jobs: int | None = None  # None: nas.device.default_jobs for the device
    timeout: float | None = None
    device: str = "auto"
    threads: int | None = None
    data_dir: str | None = None
    dataset: str = "mnist"
    image_size: int | None = None  # None: the data's own size
    sampler: str = "tpe"
    warm_start: bool = False
    epochs: int = 1
    trial_time_limit: float | None = None  # seconds of training per trial, projected early; None: nas.pace's rule
    train_subset: int | None = None
    results_dir: str = "results"
    artifact_dir: str | None = None
    quiet: bool = False
    objective: str = "accuracy"  # or "pareto": validation accuracy (max) and a size metric (min), one study
    size_metric: str | None = None  # pareto: one of SIZE_METRICS; None: params

    @property
    def pareto(self) -> bool:
        return self.objective == "pareto"

    @property
    def size(self) -> str:
        """The pareto mode's size metric (params unless --size-metric says otherwise)."""
        return self.size_metric or "params"

    @property
    def microcontroller(self) -> bool:
        """Whether the search is for a microcontroller: it then writes best.tflite (int8) and its C array."""
        return self.int8_memory or self.max_arena_kb is not None or self.max_flash_kb is not None

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{Path(self.results_dir).as_posix()}/nas.db"

    def study_name(self, space: SearchSpace) -> str:
        """--study, else `<space>-<max-params>` plus what differs from the defaults (device ceilings, dataset, epochs,
        subset): e.g. mnist-25000-mflops4-int8kb64-lat0.5ms."""
        if self.study is not None:
            return self.study
        name = f"{space.name}-{self.max_params}"
        name += "" if self.max_mflops is None else f"-mflops{self.max_mflops:g}"
        name += "-int8" if self.int8_memory and self.max_peak_kb is None else ""
        name += "" if self.max_peak_kb is None else f"-{'int8' if self.int8_memory else ''}kb{self.max_peak_kb:g}"
        name += "" if self.max_arena_kb is None else f"-arena{self.max_arena_kb:g}kb"
        name += "" if self.max_flash_kb is None else f"-flash{self.max_flash_kb:g}kb"
        name += "" if self.max_latency_ms is None else f"-lat{self.max_latency_ms:g}ms"
        name += "" if self.dataset == "mnist" else f"-{self.dataset}"
        name += f"-{Path(self.data_dir).stem}" if self.dataset in ("folder", "npz") and self.data_dir else ""
        name += "" if self.image_size is None else f"-{self.image_size}px"
        name += "" if self.epochs == 1 else f"-e{self.epochs}"
        name += "" if self.train_subset is None else f"-sub{self.train_subset}"
        name += "" if not self.pareto else "-pareto" + ("" if self.size == "params" else f"-{self.size}")
        return name

    def out_dir(self, study_name: str) -> Path:
        return Path(self.results_dir) / study_name

    def artifacts(self, study_name: str) -> Path:
        return Path(self.artifact_dir) if self.artifact_dir else self.out_dir(study_name) / "artifacts"


def config_from(args: dict) -> SearchConfig:
    """The settings among parsed command-line arguments; the others are ignored, and None (a flag not given) leaves
    the default."""
    fields = {f.name for f in dataclasses.fields(SearchConfig)}
    return SearchConfig(**{k: v for k, v in args.items() if k in fields and v is not None})


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
# pareto mode's size metrics: the trial user attr each is read from, and the attr's units per the metric's unit
SIZE_METRICS = {"params": ("params", 1), "mflops": ("flops", 1e6), "peak-kb": ("peak_kb", 1),
                "latency-ms": ("latency_ms", 1)}
# the labels that report, export and evaluate take from the study; a flag saying otherwise is refused
STUDY_SETTINGS = ("dataset", "epochs", "train_subset", "image_size")


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
            **objective_identity(config)}


def objective_identity(config: SearchConfig) -> dict:
    """Pareto mode's labels; none in the default mode, so its studies' identities stay as they were."""
    return {"objective": config.objective, "size_metric": config.size} if config.pareto else {}


def size_metric(study_attrs: dict) -> str:
    """A study's size metric: its pareto one, else params."""
    return study_attrs["size_metric"] if study_attrs.get("objective") == "pareto" else "params"


def size_column(study_attrs: dict) -> str:
    """The trial attr a study's reports plot and rank size by (flops for mflops, ...)."""
    return SIZE_METRICS[size_metric(study_attrs)][0]


def size_of(attrs: dict, metric: str) -> float:
    """A trial's size in `metric`'s units, from its user attrs (e.g. flops / 1e6 for mflops)."""
    attr, scale = SIZE_METRICS[metric]
    return attrs[attr] / scale


def ceiling_identity(ceilings: Ceilings) -> dict:
    """The effective device ceilings, so a study resumes only under the same ones. A study made before them lacks
    these labels; create_or_resume sets them, so it still resumes."""
    return {"max_mflops": ceilings.mflops, "max_peak_kb": ceilings.peak_kb, "int8_memory": ceilings.int8,
            "max_latency_ms": ceilings.latency_ms, "max_arena_kb": ceilings.arena_kb,
            "max_flash_kb": ceilings.flash_kb}
