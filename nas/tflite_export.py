"""A network -> TFLite flatbuffers for microcontrollers, with maintained tools only: fp32 by litert-torch, full-integer
int8 by ai-edge-quantizer (static, calibrated), run by LiteRT's interpreter (fp32) and TensorFlow Lite Micro's (int8),
the arena TFLM measures, and the C array a TFLM project compiles.

A model takes one image (1, H, W, C), NHWC, scaled to [0, 1]; the normalisation is inside it. The int8 model takes
int8 pixels, q = round(x / scale) + zero_point, and gives int8 logits, and carries no tensor names. Each file
carries the candidate's and the data's JSON in its metadata (the same keys as the weights file), and the int8 input's
scale and zero point.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass

import numpy as np
import torch

from nas import export
from nas.data import DataInfo
from nas.errors import UserError
from nas.spec import Candidate

SPEC_KEY, DATA_KEY = export.SPEC_KEY, export.DATA_KEY  # the metadata keys of every exported model
INPUT_KEY = "nas.input"
LAYOUT = "NHWC"
INSTALL = "pip install -e '.[tflite]'"
TFLM_ARENA = 1 << 22  # bytes the measuring interpreter may use; the arena it reports is what the model needs
ALLOCATION = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")


class MissingToolchain(UserError):
    """The optional TFLite extra is not installed."""


class TfliteError(UserError):
    """A TFLite model that cannot be read as one `search.py export` wrote, or that TFLM cannot run."""


def require() -> None:
    """A one-line MissingToolchain unless litert-torch, ai-edge-quantizer and tflite-micro all import."""
    try:
        with captured_output():  # importing them logs a few lines of C++ and Python noise to stderr
            import ai_edge_litert.interpreter  # noqa: F401
            import ai_edge_quantizer  # noqa: F401
            import litert_torch  # noqa: F401
            import tflite_micro  # noqa: F401
    except ImportError as e:
        raise MissingToolchain(f"TFLite export needs the optional toolchain ({e.name} is not installed): "
                               f"{INSTALL}") from None


def check_runs_on_tflm(arch) -> None:
    """A one-line TfliteError for a network with a layer TFLM has no int8 kernel for (nas.tflm_budget)."""
    from nas import tflm_budget

    if tflm_budget.unsupported_layers(arch):
        raise TfliteError(f"TensorFlow Lite Micro has no int8 kernel for {', '.join(tflm_budget.UNSUPPORTED)}, "
                          f"which this network uses; export it as tflite or onnx, or search without it")


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


# -- converting -----------------------------------------------------------------------------------------------
def fp32_flatbuffer(model: torch.nn.Module, input_shape: tuple[int, int, int]) -> bytes:
    """The fp32 TFLite model of `model` (a nas.export.Normalised: [0, 1] images, NCHW) taking NHWC images."""
    import litert_torch

    litert_torch.config.show_progress = False
    nhwc = litert_torch.to_channel_last_io(model.eval(), args=[0]).eval()
    c, h, w = input_shape
    with captured_output(), torch.no_grad():
        return bytes(litert_torch.convert(nhwc, (torch.rand(1, h, w, c),)).model_content())


def int8_flatbuffer(fp32: bytes, calibration: torch.Tensor) -> bytes:
    """Full-integer int8 (weights per channel, activations, input and output) of fp32 TFLite model `fp32`,
    its activation ranges calibrated on uint8 images `calibration` (N, C, H, W).

    Each range is the least and most value seen over all the images (min_max_update). The quantizer's default, a
    moving average of each image's range, clips the extremes of a model calibrated one image at a time."""
    from ai_edge_quantizer import calibrator, quantizer, recipe, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    signature, name = _signature(fp32)
    plan = recipe.static_wi8_ai8()
    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(plan)
    samples = [{name: image} for image in nhwc(calibration)]
    with captured_output():
        ranges = calibrator.Calibrator(fp32, num_threads=1, qsv_update_func=qsv_utils.min_max_update)
        ranges.calibrate({signature: samples}, manager)
        quant = quantizer.Quantizer(fp32, plan)
        return bytes(quant.quantize(ranges.get_model_qsvs(), enable_progress_report=False).quantized_model)


def int8_model(fp32: bytes, calibration: torch.Tensor, candidate: Candidate, data: DataInfo) -> bytes:
    """The file a microcontroller gets: fp32 TFLite model `fp32` as full-integer int8 (int8_flatbuffer), with its
    metadata and without tensor names."""
    return with_metadata(int8_flatbuffer(fp32, calibration), candidate, data, strip=True)


def _signature(flatbuffer: bytes) -> tuple[str, str]:
    """(signature key, input name) of a one-input model."""
    interpreter = _litert(flatbuffer)
    key, io = next(iter(interpreter.get_signature_list().items()))
    return key, io["inputs"][0]


def nhwc(images: torch.Tensor) -> np.ndarray:
    """uint8 images (N, C, H, W) -> float32 (N, 1, H, W, C) in [0, 1]: one batch-1 input per image."""
    scaled = images.to(device="cpu", dtype=torch.float32).div(255.0).permute(0, 2, 3, 1).contiguous()
    return scaled.numpy()[:, None]


# -- metadata ---------------------------------------------------------------------------------------------------
def with_metadata(flatbuffer: bytes, candidate: Candidate, data: DataInfo, strip: bool = False) -> bytes:
    """`flatbuffer` with the candidate's and the data's JSON, and its input's quantisation, as named metadata;
    `strip`: without the tensor names and signatures, which TFLM does not read and which would take a third or more
    of a small model's flash."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    entries = {SPEC_KEY: candidate.to_json(), DATA_KEY: json.dumps(data.to_dict(), sort_keys=True),
               INPUT_KEY: json.dumps(input_quantisation(flatbuffer))}
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    model.metadata = [m for m in model.metadata or [] if _name(m.name) not in entries]
    for key, value in entries.items():
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(value.encode(), dtype=np.uint8)
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name, entry.buffer = key, len(model.buffers) - 1
        model.metadata.append(entry)
    if strip:
        flatbuffer_utils.strip_strings(model)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _name(name) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)


def metadata(flatbuffer: bytes) -> dict[str, str]:
    """The named metadata of a TFLite model, as text."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    found = {}
    for entry in model.metadata or []:
        data = model.buffers[entry.buffer].data
        if data is not None:
            found[_name(entry.name)] = bytes(np.asarray(data, dtype=np.uint8)).decode(errors="replace")
    return found


def read(path) -> tuple[bytes, Candidate, DataInfo]:
    """(flatbuffer, candidate, data) of a .tflite file written by export; a one-line TfliteError otherwise."""
    flatbuffer = path.read_bytes()
    try:
        meta = metadata(flatbuffer)
    except Exception as e:  # noqa: BLE001 - the flatbuffer reader raises many types for damaged bytes
        raise TfliteError(f"{path}: not a readable TFLite model ({_first_line(e)})") from None
    return (flatbuffer, *export.recorded_in(meta, str(path), TfliteError))


# -- running ----------------------------------------------------------------------------------------------------
def _litert(flatbuffer: bytes):
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
    return _litert(flatbuffer).get_input_details()[0]["dtype"] == np.int8


def input_quantisation(flatbuffer: bytes) -> dict:
    """The input's layout, dtype and, for an int8 model, its scale and zero point."""
    detail = _litert(flatbuffer).get_input_details()[0]
    scale, zero = detail["quantization"]
    found = {"layout": LAYOUT, "shape": [int(v) for v in detail["shape"]], "dtype": np.dtype(detail["dtype"]).name}
    return found | ({"scale": float(scale), "zero_point": int(zero)} if detail["dtype"] == np.int8 else {})


def litert_logits(flatbuffer: bytes, images: torch.Tensor) -> np.ndarray:
    """The fp32 model's logits, run by LiteRT's interpreter one uint8 image (N, C, H, W) at a time."""
    interpreter = _litert(flatbuffer)
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
        raise TfliteError(f"TensorFlow Lite Micro cannot run the model ({_first_line(e)})") from None


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


# -- C source ---------------------------------------------------------------------------------------------------
def c_source(flatbuffer: bytes, name: str) -> tuple[str, str]:
    """(`<name>_data.cc`, `<name>_data.h`): the model as an aligned const array and its length, for a TFLM build."""
    symbol = re.sub(r"\W", "_", name)
    symbol = symbol if symbol[:1].isalpha() or symbol[:1] == "_" else f"model_{symbol}"
    guard = f"{symbol.upper()}_DATA_H_"
    header = (f"// {name}: a TensorFlow Lite model ({len(flatbuffer):,} bytes), written by search.py export.\n"
              f"#ifndef {guard}\n#define {guard}\n\n"
              f"extern const unsigned char {symbol}_data[];\nextern const unsigned int {symbol}_data_len;\n\n"
              f"#endif  // {guard}\n")
    rows = ",\n".join("  " + ", ".join(f"0x{b:02x}" for b in flatbuffer[i:i + 12])
                      for i in range(0, len(flatbuffer), 12))
    source = (f'#include "{name}_data.h"\n\n'
              f"// 16-byte aligned, as TFLM reads the flatbuffer in place\n"
              f"alignas(16) const unsigned char {symbol}_data[] = {{\n{rows}\n}};\n"
              f"const unsigned int {symbol}_data_len = {len(flatbuffer)};\n")
    return source, header


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
