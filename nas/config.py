"""The settings of one search as plain data, with their defaults and choices: the command line and the Python API
read them from here. It imports neither torch nor optuna, so bad flags fail fast."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

# every --dataset: torchvision's sets (nas.data.sources.DATASETS holds their files), an image folder, an npz file
DATASETS = ("mnist", "fashion-mnist", "kmnist", "emnist-letters", "emnist-balanced", "cifar10", "cifar100", "svhn",
            "folder", "npz")
SAMPLERS = ("tpe", "random")
OBJECTIVES = ("accuracy", "pareto")
DEVICES = ("auto", "cpu", "cuda", "mps")
FORMATS = ("safetensors", "onnx", "onnx-int8", "tflite", "tflite-int8")  # export's formats
# pareto mode: its size bands end at these shares of the ceiling and at the ceiling (5k, 10k and 25k at 25k), each
# band drawn by an equal share of the trials, so every named size is searched as well as the others
DEFAULT_SIZE_SHARES = (0.2, 0.4)
DASHBOARD_HOST, DASHBOARD_PORT = "127.0.0.1", 8080  # where the dashboard command serves (optuna-dashboard's own)
PROXY_HOST = "localhost"  # where serve-storage listens: this machine only, unless --host says otherwise


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
    jobs: int | None = None  # None: nas.engine.device.default_jobs for the device
    timeout: float | None = None
    device: str = "auto"
    threads: int | None = None
    data_dir: str | None = None
    dataset: str = "mnist"
    image_size: int | None = None  # None: the data's own size
    sampler: str = "tpe"
    warm_start: bool = False
    epochs: int = 1
    trial_time_limit: float | None = None  # seconds of training per trial, projected early; None: nas.engine.pace's rule
    train_subset: int | None = None
    results_dir: str = "results"
    artifact_dir: str | None = None
    # where weights go: a folder, s3://BUCKET/PREFIX, db (the --storage database) or a database URL; None: the
    # folder artifacts(study) (nas.engine.artifact_store)
    artifact_store: str | None = None
    quiet: bool = False
    objective: str = "accuracy"  # or "pareto": validation accuracy (max) and a size metric (min), one study
    size_metric: str | None = None  # pareto: one of SIZE_METRICS; None: params
    sizes: tuple[int, ...] | None = None  # pareto: params each size band ends at; None: DEFAULT_SIZE_SHARES

    @property
    def mode(self) -> Mode:
        """Accuracy, or pareto against --size-metric (params unless it says otherwise)."""
        return Mode(self.objective, self.size_metric or "params")

    @property
    def size_shares(self) -> tuple[float, ...]:
        """Pareto mode: where its size bands end, as shares of --max-params, ascending, the ceiling (1.0) last."""
        sizes = self.sizes or [share * self.max_params for share in DEFAULT_SIZE_SHARES]
        return tuple(sorted({size / self.max_params for size in sizes if size < self.max_params} | {1.0}))

    @property
    def microcontroller(self) -> bool:
        """Whether the search is for a microcontroller: it then writes best.tflite (int8) and its C array."""
        return self.int8_memory or self.max_arena_kb is not None or self.max_flash_kb is not None

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{Path(self.results_dir).as_posix()}/nas.db"

    def study_name(self, space) -> str:
        """--study, else `<space>-<max-params>` plus what differs from the defaults (device ceilings, dataset, epochs,
        subset): e.g. mnist-25000-mflops4-int8kb64-lat0.5ms."""
        if self.study is not None:
            return self.study
        name = f"{space.name}-{self.max_params}"  # `space`: a nas.space.space.SearchSpace
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
        name += self.mode.name_suffix()
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


# the size metrics: the trial user attr each is read from, and the attr's units per the metric's unit
SIZE_METRICS = {"params": ("params", 1), "mflops": ("flops", 1e6), "peak-kb": ("peak_kb", 1),
                "latency-ms": ("latency_ms", 1)}
# the labels that report, export and evaluate take from the study; a flag saying otherwise is refused
STUDY_SETTINGS = ("dataset", "epochs", "train_subset", "image_size")


@dataclass(frozen=True)
class Mode:
    """What a study optimises: validation accuracy alone ("accuracy"), or a Pareto set of validation accuracy against
    a size metric ("pareto", one multi-objective study). The objective, the study, the reports and the summary ask
    it, instead of testing a flag each."""

    objective: str = "accuracy"
    size: str = "params"  # the size metric the reports plot and pareto mode minimises: a key of SIZE_METRICS

    @classmethod
    def of_study(cls, attrs: dict) -> "Mode":
        """The mode a study's user attrs record (a study made without labels is an accuracy study)."""
        pareto = attrs.get("objective") == "pareto"
        return cls("pareto", attrs["size_metric"]) if pareto else cls()

    @property
    def pareto(self) -> bool:
        return self.objective == "pareto"

    @property
    def directions(self) -> list[str]:
        return ["maximize", "minimize"] if self.pareto else ["maximize"]

    @property
    def size_attr(self) -> str:
        """The trial user attr the size is read from (flops for mflops, ...)."""
        return SIZE_METRICS[self.size][0]

    def size_of(self, attrs) -> float:
        """A trial's size in the metric's units, from its user attrs (e.g. flops / 1e6 for mflops)."""
        attr, scale = SIZE_METRICS[self.size]
        return attrs[attr] / scale

    def values(self, val_acc: float, attrs) -> float | tuple[float, float]:
        """What a trial tells its study: its validation accuracy, and in pareto mode its size too."""
        return (val_acc, self.size_of(attrs)) if self.pareto else val_acc

    def labels(self) -> dict:
        """The study's labels for its mode; none in accuracy mode, so those studies' identities stay as they were."""
        return {"objective": self.objective, "size_metric": self.size} if self.pareto else {}

    def name_suffix(self) -> str:
        """The default study name's part for the mode: "", "-pareto" or e.g. "-pareto-mflops"."""
        return "" if not self.pareto else "-pareto" + ("" if self.size == "params" else f"-{self.size}")

    @property
    def frontier_name(self) -> str:
        """What the summary calls the non-dominated trials: a Pareto "set" when it is the study's own objective."""
        return "set" if self.pareto else "frontier"
