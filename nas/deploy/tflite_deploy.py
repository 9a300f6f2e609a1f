"""TFLite exports for microcontrollers, each run by the runtime that will run it before it is written, and `check`
of an exported .tflite file.

- fp32: LiteRT's interpreter against PyTorch on the first CHECK_IMAGES test images, held to nas.deploy.onnx_deploy's limits.
- int8 (full-integer): TensorFlow Lite Micro's own interpreter against the fp32 network, whose predicted classes
  must agree on at least MIN_INT8_AGREEMENT of the first CHECK_IMAGES test images; then both test accuracies over the
  whole test set, and the tensor arena TFLM allocates. The C source a TFLM project compiles is written beside it.
A failed check writes nothing (a CheckFailed: exit code 3).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from nas.deploy import onnx_deploy as deploy, export, tflite_export, tflite_runtime
from nas import logs
from nas.config import SearchConfig
from nas.data import Splits
from nas.data import read_data
from nas.fileio import atomic_path, write_text

MIN_INT8_AGREEMENT = 0.99  # the share of test images TFLM's int8 model must classify as the fp32 network does
TFLM = "TFLM int8"


@dataclass(frozen=True)
class Int8Report:
    """What the int8 model costs: its test accuracy beside the fp32 network's, its flash and TFLM's arena."""

    agreement: deploy.Agreement  # TFLM against the fp32 network, on the first CHECK_IMAGES test images
    images: int
    fp32_acc: float
    int8_acc: float
    flash: int  # bytes of the .tflite file, the array a device flashes
    arena: tflite_runtime.Arena
    input: dict  # the input's layout, scale and zero point

    def summary(self) -> str:
        """One line: flash, arena and accuracy."""
        return (f"flash {self.flash / 1024:.1f} KB, TFLM arena {self.arena.total / 1024:.1f} KB ({self.arena.head:,} "
                f"head + {self.arena.tail:,} tail bytes), test accuracy TFLM {self.int8_acc:.2%}, fp32 "
                f"{self.fp32_acc:.2%}")

    def lines(self) -> list[str]:
        q, first = self.input, self.agreement
        return [f"{first.runtime} vs {first.against} on {first.images:,} test images: predictions agree on "
                f"{first.agreement:.2%} (limit: at least {MIN_INT8_AGREEMENT:.0%})",
                f"int8 test accuracy on {self.images:,} images: TFLM {self.int8_acc:.2%}, fp32 {self.fp32_acc:.2%} "
                f"({(self.int8_acc - self.fp32_acc) * 100:+.2f} points)",
                f"flash {self.flash:,} bytes ({self.flash / 1024:.1f} KB); {self.arena}",
                f"input: int8 {q['layout']} {tuple(q['shape'])}, q = round(x / {q['scale']:.6g}) "
                f"{'-' if q['zero_point'] < 0 else '+'} {abs(q['zero_point'])} for pixels x scaled to [0, 1]"]


def c_files(out: Path) -> tuple[Path, Path]:
    """Where the C source of an int8 model `out` goes: `<name>_data.cc` and `<name>_data.h` beside it."""
    return Path(f"{out.with_suffix('')}_data.cc"), Path(f"{out.with_suffix('')}_data.h")


def export_trial(trial, store, out: Path, config: SearchConfig, int8: bool = False, say=print) -> Path:
    """A stored trial's TFLite model at `out` (nas.deploy.onnx_deploy.export_trial's way: checked on the study's data, its
    weights beside it)."""
    tflite_export.require()  # before any data is read
    with deploy.stored_weights(trial, store, out, config) as weights:
        export_tflite(weights, out, read_data(config), int8, say)  # its report went to `say`
    return Path(out)


def export_tflite(weights: Path, out: Path, splits: Splits, int8: bool = False, say=print) -> Int8Report | None:
    """Writes `out`, the TFLite model of a weights file (fp32, or full-integer int8 calibrated on `splits`' training
    images, with its C source), and its `.json` spec beside it, once its runtime's check on `splits`' test images
    has passed; a failed check writes nothing. The int8 model's report, or None for fp32."""
    tflite_export.require()
    out = Path(out)
    model, candidate, data = deploy.network(weights)
    if int8:
        tflite_export.check_runs_on_tflm(candidate.arch)
    fp32 = tflite_export.fp32_flatbuffer(model, tuple(data.shape))
    say(f"{check_fp32(fp32, model, splits.x_test, str(out))} {deploy.limits()}")
    flatbuffer, report = tflite_export.with_metadata(fp32, candidate, data), None
    if int8:
        flatbuffer = tflite_export.int8_model(fp32, splits.x_train[:deploy.CALIBRATION_IMAGES], candidate, data)
        report = check_int8(flatbuffer, model, splits, str(out))
        for line in report.lines():
            say(line)
    with atomic_path(out) as tmp:
        tmp.write_bytes(flatbuffer)
    if int8:
        source, header = tflite_export.c_source(flatbuffer, out.stem)
        cc, h = c_files(out)
        write_text(h, header)
        write_text(cc, source)
    write_text(out.with_suffix(".json"), export.spec_json(candidate, data))
    return report


def check_fp32(flatbuffer: bytes, model: torch.nn.Module, images: torch.Tensor, where: str) -> deploy.Agreement:
    """LiteRT's logits against PyTorch's on the first CHECK_IMAGES of uint8 `images`; a CheckFailed beyond the
    limits."""
    images = images[:deploy.CHECK_IMAGES]
    result = deploy.agreement(tflite_runtime.litert_logits(flatbuffer, images), deploy.torch_logits(model, images),
                              "LiteRT")
    if not result.passed:
        raise deploy.CheckFailed(f"{where}: {result} {deploy.limits()}: the TFLite model does not compute what the "
                                 f"network does")
    return result


def check_int8(flatbuffer: bytes, model: torch.nn.Module, splits: Splits, where: str) -> Int8Report:
    """TFLM's int8 predictions against the fp32 network's on the first CHECK_IMAGES test images (a CheckFailed below
    MIN_INT8_AGREEMENT), then both accuracies over the whole test set, and the arena."""
    ours = tflite_runtime.tflm_logits(flatbuffer, splits.x_test)
    theirs = deploy.torch_logits(model, splits.x_test)
    first = deploy.agreement(ours[:deploy.CHECK_IMAGES], theirs[:deploy.CHECK_IMAGES], TFLM, "the fp32 network")
    if first.agreement < MIN_INT8_AGREEMENT:
        raise deploy.CheckFailed(f"{where}: {TFLM} and the fp32 network agree on {first.agreement:.2%} of "
                                 f"{first.images:,} test images (limit: at least {MIN_INT8_AGREEMENT:.0%})")
    labels = splits.y_test.cpu().numpy()
    acc = [float((logits.argmax(1) == labels).mean()) if len(labels) else 0.0 for logits in (theirs, ours)]
    return Int8Report(first, len(labels), *acc, len(flatbuffer), tflite_runtime.measured_arena(flatbuffer),
                      tflite_runtime.input_quantisation(flatbuffer))


def check_file(path: Path, weights: Path | None, config: SearchConfig, say=print) -> None:
    """`search.py check FILE.tflite`: the export's checks again, against its weights (--weights, else the
    .safetensors beside it), on the test images of the data it records."""
    tflite_export.require()
    flatbuffer, candidate, data = tflite_export.read(path)
    model = deploy.weights_for(path, weights, candidate)
    splits = deploy.data_for(data, config)
    if not tflite_runtime.is_int8(flatbuffer):
        say(f"{check_fp32(flatbuffer, model, splits.x_test, str(path))} {deploy.limits()}")
        return
    for line in check_int8(flatbuffer, model, splits, str(path)).lines():
        say(line)


def write_best_tflite(weights: Path, out: Path, splits: Splits) -> Path | None:
    """results/<study>/best.tflite (int8) and its C source from best.safetensors at the end of a search, with one
    line for the search's log. A network that cannot go onto a microcontroller, a failed check or a missing toolchain
    is that one line too, and None: the search's other results stand."""
    try:
        report = export_tflite(weights, out, splits, int8=True, say=lambda line: None)
    except (tflite_export.MissingToolchain, tflite_runtime.TfliteError, deploy.CheckFailed) as e:
        logs.line(f"{out.name} not written: {e}")
        return None
    logs.line(f"{out.name} (int8, and its C array {out.stem}_data.cc): {report.summary()}")
    return out
