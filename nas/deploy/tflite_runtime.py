"""Running TFLite models: fp32 by LiteRT's interpreter, full-integer int8 by TensorFlow Lite Micro's, one image at a
time, and the tensor arena TFLM allocates; the converters' and runtimes' printing silenced.

Images are uint8 (N, C, H, W); a model takes one at a time, NHWC, scaled to [0, 1] (and, for int8, quantised by its
input's scale and zero point).
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
from dataclasses import dataclass

import numpy as np
import torch

from nas.errors import UserError, first_line

LAYOUT = "NHWC"
TFLM_ARENA = 1 << 22  # bytes the measuring interpreter may use; the arena it reports is what the model needs
ALLOCATION = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")


class TfliteError(UserError):
    """A TFLite model that cannot be read as one `search.py export` wrote, or that TFLM cannot run."""


@contextlib.contextmanager
def captured_output():
    """Silences what the converters print, from Python (progress bars) and from C++ (file descriptors 1 and 2), and
    yields a list that receives the text once the block ends (TFLM prints its arena that way)."""
    text: list[str] = []
    python = io.StringIO()
    with tempfile.TemporaryFile(mode="w+b") as sink:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = [os.dup(1), os.dup(2)]
        try:
            for stream in (1, 2):
                os.dup2(sink.fileno(), stream)
            with contextlib.redirect_stdout(python), contextlib.redirect_stderr(python):
                yield text
        finally:
            for stream, fd in zip((1, 2), saved):
                os.dup2(fd, stream)
                os.close(fd)
            sink.seek(0)
            text.append(sink.read().decode(errors="replace") + python.getvalue())


def nhwc(images: torch.Tensor) -> np.ndarray:
    """uint8 images (N, C, H, W) -> float32 (N, 1, H, W, C) in [0, 1]: one batch-1 input per image."""
    scaled = images.to(device="cpu", dtype=torch.float32).div(255.0).permute(0, 2, 3, 1).contiguous()
    return scaled.numpy()[:, None]


def litert(flatbuffer: bytes):
    """LiteRT's interpreter with its reference kernels: the XNNPACK delegate it adds by default refuses some int8
    models that TFLM runs."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    with captured_output():
        interpreter = Interpreter(model_content=flatbuffer, num_threads=1,
                                  experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interpreter.allocate_tensors()
    return interpreter


def is_int8(flatbuffer: bytes) -> bool:
    """Whether the model's input is int8 (a full-integer model)."""
    return litert(flatbuffer).get_input_details()[0]["dtype"] == np.int8


def input_quantisation(flatbuffer: bytes) -> dict:
    """The input's layout, dtype and, for an int8 model, its scale and zero point."""
    detail = litert(flatbuffer).get_input_details()[0]
    scale, zero = detail["quantization"]
    found = {"layout": LAYOUT, "shape": [int(v) for v in detail["shape"]], "dtype": np.dtype(detail["dtype"]).name}
    return found | ({"scale": float(scale), "zero_point": int(zero)} if detail["dtype"] == np.int8 else {})


def litert_logits(flatbuffer: bytes, images: torch.Tensor) -> np.ndarray:
    """The fp32 model's logits, run by LiteRT's interpreter one uint8 image (N, C, H, W) at a time."""
    interpreter = litert(flatbuffer)
    into, out = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]
    rows = []
    for image in nhwc(images):
        interpreter.set_tensor(into, image)
        interpreter.invoke()
        rows.append(interpreter.get_tensor(out)[0].copy())
    return np.stack(rows) if rows else np.zeros((0, 0), np.float32)


def tflm_logits(flatbuffer: bytes, images: torch.Tensor) -> np.ndarray:
    """The int8 model's logits, dequantised, run by TensorFlow Lite Micro one uint8 image at a time."""
    interpreter = _tflm(flatbuffer)
    into, out = interpreter.get_input_details(0), interpreter.get_output_details(0)
    (in_scale,), (in_zero,) = into["quantization_parameters"]["scales"], into["quantization_parameters"]["zero_points"]
    (out_scale,), (out_zero,) = out["quantization_parameters"]["scales"], out["quantization_parameters"]["zero_points"]
    rows = []
    for image in nhwc(images):
        q = np.clip(np.round(image / in_scale) + in_zero, -128, 127).astype(np.int8)
        interpreter.set_input(q, 0)
        interpreter.invoke()
        rows.append((interpreter.get_output(0)[0].astype(np.float32) - out_zero) * out_scale)
    return np.stack(rows) if rows else np.zeros((0, 0), np.float32)


def _tflm(flatbuffer: bytes, arena: int = TFLM_ARENA):
    from tflite_micro import runtime

    try:
        with captured_output():
            return runtime.Interpreter.from_bytes(flatbuffer, arena_size=arena)
    except Exception as e:  # noqa: BLE001 - TFLM reports a model it cannot run as a RuntimeError or ValueError
        raise TfliteError(f"TensorFlow Lite Micro cannot run the model ({first_line(e)})") from None


@dataclass(frozen=True)
class Arena:
    """The tensor arena TFLM allocates for a model: activations (head) and persistent data (tail), in bytes."""

    total: int
    head: int
    tail: int

    def __str__(self) -> str:
        return (f"TFLM arena {self.total:,} bytes ({self.total / 1024:.1f} KB): {self.head:,} of activations (head), "
                f"{self.tail:,} of persistent data (tail)")


def measured_arena(flatbuffer: bytes) -> Arena:
    """The arena TensorFlow Lite Micro's recording allocator reports after one inference of an int8 model."""
    interpreter = _tflm(flatbuffer)
    detail = interpreter.get_input_details(0)
    interpreter.set_input(np.zeros(detail["shape"], dtype=detail["dtype"]), 0)
    with captured_output() as text:
        interpreter.invoke()
        interpreter.print_allocations()
    found = dict((kind, int(n)) for kind, n in ALLOCATION.findall("".join(text)))
    return Arena(found["total"], found["head"], found["tail"])

