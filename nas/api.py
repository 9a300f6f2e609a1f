"""The Python API: `search`, its `SearchResult`, and `load`, `describe` and `evaluate` beside it. The command line
calls these same functions; they raise `UserError`s (one-line messages) and never exit."""
from __future__ import annotations

import functools
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Sequence, Union

import optuna
import pandas as pd
import torch

from nas import commands, data as data_mod, network_card
from nas.deploy import export
from nas.data import memory_data
from nas.results import summary
from nas.engine import study as study_mod
from nas.config import DATASETS, SearchConfig
from nas.data import CACHE_DIR
from nas.run import run
from nas.space.spec import Candidate

_DEFAULT = SearchConfig()
# a dataset name, an image folder or .npz path, (x_train, y_train[, x_test, y_test]) arrays or tensors, or an
# object with __len__ and __getitem__ giving (image, label) pairs, e.g. a torchvision dataset
Data = Union[str, os.PathLike, Sequence[Any], Any]


@dataclass
class SearchResult:
    """What a search found: its study, its settings, and the files it wrote to its results folder."""

    study: optuna.Study
    config: SearchConfig
    paths: dict[str, Path]  # the files written: trials, frontier, html, best, onnx (and tflite)

    @property
    def best_trial(self) -> optuna.trial.FrozenTrial | None:
        """The trial with the highest validation accuracy (the smallest of equals); None if none completed."""
        return study_mod.best_trial(self.study)

    @property
    def best(self) -> torch.nn.Module:
        """The best network, loaded in eval mode: it takes (N, C, H, W) images scaled to [0, 1]."""
        if "best" not in self.paths and self.best_trial is not None:  # its weights are on another machine's disk
            raise export.WeightsUnreachable(export.unreachable_weights(self.best_trial))
        return export.load(self.paths["best"])

    @property
    def trials(self) -> pd.DataFrame:
        """Every trial of the study, one row each, as trials.csv holds them."""
        from nas.results import report

        return report.trials_frame(self.study)

    @property
    def frontier(self) -> pd.DataFrame:
        """The Pareto frontier of validation accuracy against size, with test accuracy, as frontier.csv holds it."""
        return pd.read_csv(self.paths["frontier"])

    def figure(self):
        """The plotly figure of frontier.html."""
        return summary.figure(self.study, self.config, self.frontier)

    def export(self, path: str | os.PathLike, format: str | None = None, trial: int | None = None) -> list[Path]:
        """Writes the best trial (or trial number `trial`) to `path` as `format`: safetensors, onnx, onnx-int8,
        tflite or tflite-int8 (default: from the suffix, .onnx -> onnx, .tflite -> tflite, else safetensors), its
        spec beside it; returns the files written."""
        picked = commands.pick_trial(self.study, trial)
        return commands.export_model(self.config, self.study, picked, Path(path), format, say=_say(self.config))


def search(data: Data = _DEFAULT.dataset, *, trials: int = _DEFAULT.trials, max_params: int = _DEFAULT.max_params,
           space: str | None = _DEFAULT.space, objective: str = _DEFAULT.objective,
           size_metric: str | None = _DEFAULT.size_metric, sizes: tuple[int, ...] | None = _DEFAULT.sizes,
           max_mflops: float | None = _DEFAULT.max_mflops,
           max_peak_kb: float | None = _DEFAULT.max_peak_kb, int8_memory: bool = _DEFAULT.int8_memory,
           max_arena_kb: float | None = _DEFAULT.max_arena_kb, max_flash_kb: float | None = _DEFAULT.max_flash_kb,
           max_latency_ms: float | None = _DEFAULT.max_latency_ms, study: str | None = _DEFAULT.study,
           storage: str | None = _DEFAULT.storage, seed: int = _DEFAULT.seed, jobs: int | None = _DEFAULT.jobs,
           timeout: float | None = _DEFAULT.timeout, device: str = _DEFAULT.device,
           threads: int | None = _DEFAULT.threads, data_dir: str | None = _DEFAULT.data_dir,
           image_size: int | None = _DEFAULT.image_size, sampler: str = _DEFAULT.sampler,
           warm_start: bool = _DEFAULT.warm_start, epochs: int = _DEFAULT.epochs,
           trial_time_limit: float | None = _DEFAULT.trial_time_limit, train_subset: int | None = _DEFAULT.train_subset,
           results_dir: str = _DEFAULT.results_dir, artifact_dir: str | None = _DEFAULT.artifact_dir,
           artifact_store: str | None = _DEFAULT.artifact_store, quiet: bool = _DEFAULT.quiet) -> SearchResult:
    """Searches for the most accurate CNN under `max_params` (and any device ceilings), training `trials` candidates
    for `epochs` each, then writes the reports and the best model to `results_dir/<study>/`. Every option is the
    command line's flag of the same name, with the same default (`python search.py --help`).

    `data` is a dataset name (mnist, fashion-mnist, cifar10, ...; torchvision sets are read under `data_dir`), an
    image-folder path, an .npz path, (x_train, y_train) or (x_train, y_train, x_test, y_test) arrays or tensors, or a
    dataset object of (image, label) pairs. Data in memory is saved once under `results_dir/.cache/`, named by its
    hash: a study resumes only on the same data.

    A study of the same name resumes if it was made with the same settings, and stops at `trials` trained trials.
    Raises a `UserError` for bad input (DataError, SpaceError, StorageError, SearchError...), SearchFailed if the
    search ran but could not finish, and Interrupted on Ctrl-C (or a notebook's interrupt) once the reports of the
    finished trials are written; finished trials are always kept in the storage."""
    options = {k: v for k, v in locals().items() if k not in ("data", "data_dir")}
    config = SearchConfig(**options, **_data_settings(data, data_dir, results_dir))
    if threads:
        torch.set_num_threads(threads)
    outcome = run(config)
    return SearchResult(commands.stored_study(config, outcome["study"]), config, outcome["paths"])


def load(path: str | os.PathLike, device: str = "cpu") -> torch.nn.Module:
    """The network of a weights file (.safetensors), in eval mode: it takes (N, C, H, W) images scaled to [0, 1]
    and normalises them as in training; `model.info.classes` names its outputs."""
    return export.load(path, device)


def describe(spec: str | os.PathLike | Candidate) -> str:
    """A network's layers with their output shapes, parameters, MFLOPs and activation bytes, then its totals, peak
    memory and predicted microcontroller figures. `spec` is a weights file, a spec JSON file, a reference name (R1,
    R2, R4) or a Candidate."""
    return "\n".join(network_card.describe_lines(spec))


@dataclass
class Evaluation:
    """Test accuracy of one network re-trained once per seed on the whole training set (no hold-out); with `tta`,
    also the test accuracy with test-time shifts, per seed (5x the inference cost; not the network's own figure)."""

    accuracies: list[float]
    tta_accuracies: list[float] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return statistics.mean(self.accuracies)

    @property
    def std(self) -> float:
        return statistics.stdev(self.accuracies) if len(self.accuracies) > 1 else 0.0


def evaluate(spec: str | os.PathLike | Candidate | None = None, *, study: str | None = None, trial: int | None = None,
             data: Data | None = None, seeds: int = 3, epochs: int | None = None, storage: str | None = None,
             results_dir: str = _DEFAULT.results_dir, data_dir: str | None = None, train_subset: int | None = None,
             image_size: int | None = None, device: str = _DEFAULT.device, quiet: bool = _DEFAULT.quiet,
             tta: bool = False) -> Evaluation:
    """Re-trains a network once per seed on the whole training set and scores it on the test set: `spec` (as for
    `describe`), or the best trial of `study` (or its trial number `trial`) in `storage`. `data` defaults to what the
    weights or the study record, else MNIST; the study's dataset, epochs and subset are its own. `tta` also scores
    the test set with test-time shifts, kept apart in `Evaluation.tta_accuracies`."""
    given = {"dataset": None, "data_dir": data_dir}
    if data is not None:
        given = _data_settings(data, data_dir, results_dir)
    args = SimpleNamespace(spec=spec, study=study, trial=trial, seeds=seeds, epochs=epochs, tta=tta,
                           train_subset=train_subset, image_size=image_size, **given)
    config = SearchConfig(results_dir=results_dir, storage=storage, device=device, quiet=quiet,
                          **{k: v for k, v in {**given, "epochs": epochs, "train_subset": train_subset,
                                               "image_size": image_size}.items() if v is not None})
    return Evaluation(*commands.evaluate_network(config, args, say=_say(config)))


def _say(config: SearchConfig) -> Callable[[str], None]:
    return (lambda _: None) if config.quiet else functools.partial(print, flush=True)


def _data_settings(data: Data, data_dir: str | None, results_dir: str) -> dict:
    """SearchConfig's dataset and data_dir for `data` (see `search`)."""
    if memory_data.is_in_memory(data):
        return {"dataset": "npz", "data_dir": str(memory_data.save_npz(data, Path(results_dir) / CACHE_DIR))}
    if str(data) in DATASETS:
        return {"dataset": str(data), "data_dir": data_dir}
    path = Path(data)
    if path.is_dir():
        return {"dataset": "folder", "data_dir": str(path)}
    if path.suffix.lower() == ".npz":
        return {"dataset": "npz", "data_dir": str(path)}
    raise data_mod.DataError(f"data={str(data)!r}: not a dataset name ({', '.join(DATASETS)}), an image folder "
                             f"or an .npz file")
