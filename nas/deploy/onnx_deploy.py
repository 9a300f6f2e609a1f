"""ONNX exports for deployment, fp32 or int8, each checked with onnxruntime against PyTorch before it is put in place,
and `check`, which repeats that check on an exported file later.

The check runs both on the first CHECK_IMAGES test images, scaled to [0, 1]: the largest absolute logit difference
must be at most MAX_DIFF and the predicted classes must agree on at least MIN_AGREEMENT of the images. An int8 model
is held to neither (quantisation moves logits by far more): its size and its test accuracy against the fp32 model's,
both run by onnxruntime, say what it costs.
"""
from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from nas.deploy import export, onnx_export
from nas import logs
from nas.config import SearchConfig
from nas.data import DataInfo, Splits
from nas.data import check_fits, read_data, recorded_data
from nas.errors import UserError
from nas.fileio import atomic_path, write_text
from nas.space.spec import Candidate

CHECK_IMAGES = 1000  # test images onnxruntime and PyTorch are compared on
CALIBRATION_IMAGES = 1000  # training images the int8 activation ranges are calibrated on
MAX_DIFF = 1e-4  # the largest absolute logit difference allowed
MIN_AGREEMENT = 0.999  # the share of images whose predicted class must agree


class CheckFailed(UserError):
    """An ONNX model that does not compute what its PyTorch network computes."""

    exit_code = 3  # the export ran but its result is wrong, as for a search that failed (nas.errors.SearchFailed)


@dataclass(frozen=True)
class Agreement:
    """A runtime's logits against PyTorch's (or another reference's) on the same images."""

    images: int
    max_diff: float
    agreement: float  # the share of images given the same class
    runtime: str = "onnxruntime"
    against: str = "PyTorch"

    @property
    def passed(self) -> bool:
        return self.max_diff <= MAX_DIFF and self.agreement >= MIN_AGREEMENT  # a NaN difference fails

    def __str__(self) -> str:
        return (f"{self.runtime} vs {self.against} on {self.images:,} test images: largest logit difference "
                f"{self.max_diff:.2e}, predictions agree on {self.agreement:.2%}")


def agreement(ours: np.ndarray, theirs: np.ndarray, runtime: str, against: str = "PyTorch") -> Agreement:
    """How far logits `ours` (a runtime's) lie from `theirs` on the same images."""
    if not len(ours):
        return Agreement(0, 0.0, 1.0, runtime, against)
    agree = float((ours.argmax(1) == theirs.argmax(1)).mean())
    return Agreement(len(ours), float(np.abs(ours - theirs).max()), agree, runtime, against)


def limits() -> str:
    """What a check holds an fp32 model to, for its printed line."""
    return f"(limits: at most {MAX_DIFF:.0e}, at least {MIN_AGREEMENT:.1%})"


@dataclass(frozen=True)
class Int8Report:
    """What quantising cost: the file's size, and test accuracy before and after, both run by onnxruntime."""

    size: int  # bytes of the int8 file
    fp32_size: int
    images: int
    fp32_acc: float
    int8_acc: float

    def __str__(self) -> str:
        return (f"int8: {self.size:,} bytes (fp32 {self.fp32_size:,}); test accuracy on {self.images:,} images, "
                f"onnxruntime: fp32 {self.fp32_acc:.2%}, int8 {self.int8_acc:.2%}")


# -- exporting ----------------------------------------------------------------------------------------------
def export_onnx(weights: Path, out: Path, splits: Splits, int8: bool = False, say=print) -> Path:
    """Writes `out`, the ONNX model of a weights file (fp32, or int8 calibrated on `splits`' training images), and its
    `.json` spec beside it, once the check on `splits`' test images has passed; a failed check writes nothing."""
    out = Path(out)
    model, candidate, data = network(weights)
    proto = onnx_export.model_proto(model, candidate, data)
    say(f"{check(proto, model, splits.x_test, str(out))} {limits()}")
    if int8:
        fp32, proto = proto, onnx_export.quantise(proto, splits.x_train[:CALIBRATION_IMAGES])
        say(str(int8_report(fp32, proto, splits)))
    with atomic_path(out) as tmp:
        tmp.write_bytes(proto.SerializeToString())
    write_text(out.with_suffix(".json"), export.spec_json(candidate, data))
    return out


def export_trial(trial, store, out: Path, config: SearchConfig, int8: bool = False, say=print) -> Path:
    """A stored trial's ONNX model at `out`, checked on the data `config` names (the study's, as made), with its
    weights beside it (`out`'s name, `.safetensors`) for `check`; a failed check writes neither."""
    with stored_weights(trial, store, out, config) as weights:
        export_onnx(weights, out, read_data(config), int8, say)
    return Path(out)


@contextlib.contextmanager
def stored_weights(trial, store, out: Path, config: SearchConfig):
    """Yields a stored trial's weights, fetched into a temporary folder beside `out`; once the block has written
    `out`, they go beside it (`out`'s name, `.safetensors`); if it fails, nowhere."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".nas-export-", dir=out.parent) as tmp:  # beside `out`: one rename
        weights = export.export_trial(trial, store, Path(tmp) / "weights.safetensors")
        yield weights
        weights.replace(weights_beside(out))


def weights_beside(model: Path) -> Path:
    """Where an exported model's PyTorch weights go, and where `check` looks for them: its name, `.safetensors`."""
    return Path(model).with_suffix(".safetensors")


def write_best_onnx(weights: Path, out: Path, splits: Splits) -> Path:
    """results/<study>/best.onnx from best.safetensors at the end of a search, checked on `splits`' test images;
    its line goes to the search's log (silent under --quiet)."""
    return export_onnx(weights, out, splits, say=logs.line)


def network(weights: Path) -> tuple[export.Normalised, Candidate, DataInfo]:
    """The network of a weights file that takes [0, 1] images, its candidate and its data."""
    candidate, data = export.read_spec(weights)
    if data is None:  # a bare network takes normalised images, and nothing says how they were normalised
        raise export.WeightsError(f"{weights}: does not record the data it was trained on, so its normalisation "
                                  f"cannot go into an ONNX model; export it from its study with search.py export")
    return export.load(weights), candidate, data


# -- the check ------------------------------------------------------------------------------------------------
def check(proto, model: torch.nn.Module, images: torch.Tensor, where: str) -> Agreement:
    """The agreement on the first CHECK_IMAGES of uint8 `images`; a CheckFailed beyond the limits."""
    result = compare(onnx_export.session(proto, where), model, images[:CHECK_IMAGES])
    if not result.passed:
        raise CheckFailed(f"{where}: {result} {limits()}: the ONNX model does not compute what the network does")
    return result


def compare(session, model: torch.nn.Module, images: torch.Tensor) -> Agreement:
    """onnxruntime (`session`) against PyTorch (`model`, taking [0, 1] images) on uint8 `images`."""
    if not len(images):
        return Agreement(0, 0.0, 1.0)
    return agreement(onnx_export.logits(session, images), torch_logits(model, images), "onnxruntime")


def torch_logits(model: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    with torch.no_grad():
        parts = [model(onnx_export.scaled(images[i:i + onnx_export.BATCH]).to(device)).cpu()
                 for i in range(0, len(images), onnx_export.BATCH)]
    return torch.cat(parts).numpy()


def accuracy(session, images: torch.Tensor, labels: torch.Tensor) -> float:
    """The share of uint8 `images` onnxruntime classifies as `labels` say."""
    if not len(labels):
        return 0.0
    return float((onnx_export.logits(session, images).argmax(1) == labels.cpu().numpy()).mean())


def int8_report(fp32, int8, splits: Splits) -> Int8Report:
    """The int8 model's size, and both models' accuracy on the whole test set."""
    acc = [accuracy(onnx_export.session(p), splits.x_test, splits.y_test) for p in (fp32, int8)]
    return Int8Report(int8.ByteSize(), fp32.ByteSize(), len(splits.y_test), *acc)


def check_file(path: Path, weights: Path | None, config: SearchConfig, say=print) -> None:
    """`search.py check FILE.onnx`: an exported model against its weights (--weights, else the .safetensors beside
    it), on the test images of the data it records. An fp32 model is held to the limits; an int8 one is reported
    on."""
    path = Path(path)
    proto, candidate, data = onnx_export.read(path)
    model = weights_for(path, weights, candidate)
    splits = data_for(data, config)
    if not onnx_export.is_int8(proto):
        say(f"{check(proto, model, splits.x_test, str(path))} {limits()}")
        return
    result = compare(onnx_export.session(proto, str(path)), model, splits.x_test[:CHECK_IMAGES])
    say(f"{result} (int8: not held to the limits)")
    say(str(int8_report(onnx_export.model_proto(model, candidate, model.info), proto, splits)))


def weights_for(model_file: Path, weights: Path | None, candidate: Candidate) -> export.Normalised:
    """The network an exported model was made from: `weights`, else the .safetensors beside it, which must hold the
    same network as the model's `candidate`."""
    weights = Path(weights) if weights else weights_beside(model_file)
    if not weights.is_file():
        raise export.WeightsError(f"{weights}: no such weights file; pass --weights FILE.safetensors, the weights "
                                  f"{model_file.name} was exported from")
    model, theirs, _ = network(weights)
    if theirs.id != candidate.id:
        raise export.WeightsError(f"{weights}: the weights of another network ({theirs.id}) than {model_file.name}'s "
                                  f"({candidate.id})")
    return model


def data_for(info: DataInfo, config: SearchConfig) -> Splits:
    """The data `info` records, read again (nas.engine.device.recorded_data), whole: no hold-out, no training subset."""
    splits = read_data(recorded_data(info, replace(config, train_subset=None)), val_size=0)
    check_fits(splits, info.shape, len(info.classes), "the model was trained on")
    return splits
