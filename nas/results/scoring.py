"""Test accuracy, for the trials a report shows only (the frontier and the best), from their stored weights.

Trials are scored on the validation hold-out alone, so the test set decides nothing: it is read when a report is
written, once, and each shown trial's weights are scored on all of it.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from nas.deploy import export
from nas.space.build import Network
from nas.config import SearchConfig
from nas.data import DataInfo, Splits
from nas.engine.train import evaluate

NO_DATA = "tensors"  # the source of data handed to a search by a program: it cannot be read again


def study_data(info: DataInfo | None, config: SearchConfig) -> Splits | None:
    """The data `info` records, read again for its test images; None for data that cannot be (tensors handed to the
    search by a program, or weights that do not say what they were trained on)."""
    if info is None or info.source == NO_DATA:
        return None
    from nas.deploy import onnx_deploy as deploy  # onnx and onnxruntime take a second or two to import

    return deploy.data_for(info, config)


def same_data(held: DataInfo, recorded: DataInfo) -> bool:
    """Whether splits described by `held` have the test images of the data `recorded` by weights."""
    return (held.source, tuple(held.shape), tuple(held.classes)) == (recorded.source, tuple(recorded.shape),
                                                                        tuple(recorded.classes))


def weights_accuracy(weights: Path, splits: Splits) -> float:
    """A weights file's accuracy on `splits`' test images, normalised as the file records (else as `splits` are)."""
    model = export.load(weights)
    return evaluate(Network(*model), splits.x_test, splits.y_test, info=getattr(model, "info", splits.info))


def accuracies(trials, store, config: SearchConfig, known: Splits | None = None
               ) -> tuple[dict[int, float], Splits | None, list]:
    """Each trial's test accuracy by number, the data read for it (None if that data cannot be read again, and then
    no accuracy), and the trials whose weights this machine cannot reach (kept on another's disk), which get none.
    Trials without stored weights are left out. `known` splits, already in memory, are used if they hold the data
    the weights record."""
    trials = [t for t in trials if t.user_attrs.get("weights_artifact")]
    with tempfile.TemporaryDirectory(prefix="nas-test-") as tmp:
        files, unreachable = {}, []
        for t in trials:
            try:
                files[t.number] = export.export_trial(t, store, Path(tmp) / f"trial-{t.number}.safetensors")
            except export.WeightsUnreachable:
                unreachable.append(t)
        if not files:
            return {}, None, unreachable
        info = export.read_spec(next(iter(files.values())))[1]
        splits = known if known is not None and info is not None and same_data(known.info, info) else \
            study_data(info, config)
        if splits is None:
            return {}, None, unreachable
        return {number: weights_accuracy(path, splits) for number, path in files.items()}, splits, unreachable
