"""A network -> TFLite files for microcontrollers, with maintained tools only: fp32 by litert-torch, full-integer int8
by ai-edge-quantizer (static, calibrated), their metadata, and the C array a TFLM project compiles. Running them is
nas.deploy.tflite_runtime's job.

A model takes one image (1, H, W, C), NHWC, scaled to [0, 1]; the normalisation is inside it. The int8 model takes
int8 pixels, q = round(x / scale) + zero_point, and gives int8 logits, and carries no tensor names. Each file
carries the candidate's and the data's JSON in its metadata (the same keys as the weights file), and the int8 input's
scale and zero point.
"""
from __future__ import annotations

import json
import re

import numpy as np
import torch

from nas.deploy import export, tflite_runtime
from nas.data import DataInfo
from nas.errors import UserError, first_line
from nas.space.spec import Candidate
from nas.deploy.tflite_runtime import TfliteError, captured_output

INPUT_KEY = "nas.input"
INSTALL = "pip install -e '.[tflite]'"


class MissingToolchain(UserError):
    """The optional TFLite extra is not installed."""


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
    """A one-line TfliteError for a network with a layer TFLM has no int8 kernel for (nas.space.tflite_graph)."""
    from nas.space import tflite_graph

    if tflite_graph.unsupported_layers(arch):
        raise TfliteError(f"TensorFlow Lite Micro has no int8 kernel for {', '.join(tflite_graph.UNSUPPORTED)}, "
                          f"which this network uses; export it as tflite or onnx, or search without it")


# -- converting -----------------------------------------------------------------------------------------------
def fp32_flatbuffer(model: torch.nn.Module, input_shape: tuple[int, int, int]) -> bytes:
    """The fp32 TFLite model of `model` (a nas.deploy.export.Normalised: [0, 1] images, NCHW) taking NHWC images."""
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
    samples = [{name: image} for image in tflite_runtime.nhwc(calibration)]
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
    interpreter = tflite_runtime.litert(flatbuffer)
    key, io = next(iter(interpreter.get_signature_list().items()))
    return key, io["inputs"][0]


# -- metadata ---------------------------------------------------------------------------------------------------
def with_metadata(flatbuffer: bytes, candidate: Candidate, data: DataInfo, strip: bool = False) -> bytes:
    """`flatbuffer` with the candidate's and the data's JSON, and its input's quantisation, as named metadata;
    `strip`: without the tensor names and signatures, which TFLM does not read and which would take a third or more
    of a small model's flash."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    entries = {export.SPEC_KEY: candidate.to_json(), export.DATA_KEY: json.dumps(data.to_dict(), sort_keys=True),
               INPUT_KEY: json.dumps(tflite_runtime.input_quantisation(flatbuffer))}
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
        raise TfliteError(f"{path}: not a readable TFLite model ({first_line(e)})") from None
    return (flatbuffer, *export.recorded_in(meta, str(path), TfliteError))


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
