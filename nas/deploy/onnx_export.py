"""A network -> an ONNX model: images (N, C, H, W) in, logits out, any batch size.

An exported model carries, as the weights file does (nas.deploy.export), the candidate's JSON and its data's DataInfo in its
metadata_props ("nas.candidate", "nas.data"), so a check can rebuild the spec and find the data from the .onnx alone.
Here: writing, reading and running such models, and quantising them to int8 (onnxruntime's static quantization).
"""
from __future__ import annotations

import io
import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from nas.deploy import export
from nas.data import DataInfo
from nas.errors import UserError, first_line
from nas.space.spec import Candidate

OPSET = 17
INPUT, OUTPUT = "images", "logits"
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
BATCH = 500  # images per onnxruntime run: bounds the activations' memory on a large test set


class OnnxFileError(UserError):
    """A file that is not an ONNX model written by `search.py export`."""


def onnx_bytes(model: torch.nn.Module, input_shape: tuple[int, int, int]) -> bytes:
    """The serialised ONNX model of `model` in eval mode, for inputs of `input_shape` (C, H, W).

    torch's TorchScript exporter (dynamo=False): 0.1 s a network where the dynamo exporter takes 2 s, which a
    per-candidate latency check cannot afford (bench/RESULTS.md)."""
    model = model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    example = torch.rand((1, *input_shape), device=device)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter announces its successor
        torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=OPSET, input_names=[INPUT],
                          output_names=[OUTPUT], dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}})
    return buffer.getvalue()


def model_proto(model: torch.nn.Module, candidate: Candidate, data: DataInfo):
    """The ONNX model of `model` (a nas.deploy.export.Normalised: [0, 1] images in), carrying the candidate and the data."""
    import onnx

    return with_metadata(onnx.load_from_string(onnx_bytes(model, tuple(data.shape))), candidate, data)


def with_metadata(proto, candidate: Candidate, data: DataInfo):
    """`proto` with the candidate's and the data's JSON in its metadata_props (replacing any there)."""
    kept = [p for p in proto.metadata_props if p.key not in (export.SPEC_KEY, export.DATA_KEY)]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    recorded = {export.SPEC_KEY: candidate.to_json(), export.DATA_KEY: json.dumps(data.to_dict(), sort_keys=True)}
    for key, value in recorded.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto


def read(path: str | Path):
    """(model proto, candidate, data) of an .onnx file written by export; a one-line OnnxFileError otherwise."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    try:
        proto = onnx.load_from_string(path.read_bytes())
    except (DecodeError, ValueError, RuntimeError) as e:  # protobuf's and onnx's ways of refusing a damaged file
        raise OnnxFileError(f"{path}: not a readable ONNX model ({first_line(e)})") from None
    meta = {p.key: p.value for p in proto.metadata_props} if proto.graph.node else {}  # no graph: not ours
    return (proto, *export.recorded_in(meta, str(path), OnnxFileError))


def is_int8(proto) -> bool:
    """Whether the model is quantised (QDQ: QuantizeLinear/DequantizeLinear nodes)."""
    return any(node.op_type in QDQ_OPS for node in proto.graph.node)


def session(proto, where: str = "the ONNX model", threads: int | None = None):
    """An onnxruntime CPU session on `proto` (a ModelProto or its bytes), running one operator at a time on `threads`
    threads (default: as many as torch uses, --threads), with no log noise."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: its warnings about unused initializers say nothing to a user
    model = proto if isinstance(proto, bytes) else proto.SerializeToString()
    try:
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types for a graph it cannot run
        raise OnnxFileError(f"{where}: onnxruntime cannot run it ({first_line(e)})") from None


def logits(sess, images: torch.Tensor) -> np.ndarray:
    """The logits onnxruntime gives for uint8 images (N, C, H, W), fed scaled to [0, 1], a batch at a time."""
    return np.concatenate([sess.run([OUTPUT], {INPUT: scaled(images[i:i + BATCH]).numpy()})[0]
                           for i in range(0, len(images), BATCH)])


def scaled(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> contiguous float32 in [0, 1], what an exported model takes."""
    return images.to(device="cpu", dtype=torch.float32, copy=True).div_(255.0).contiguous()  # never `images` itself


class _Calibration:
    """A CalibrationDataReader (onnxruntime.quantization's, which counts any class with `get_next` as one) over uint8
    images: a batch of them per call, then None."""

    def __init__(self, images: torch.Tensor, batch: int = 100):
        self.batches = iter([{INPUT: scaled(images[i:i + batch]).numpy()} for i in range(0, len(images), batch)])

    def get_next(self):
        return next(self.batches, None)


def quantise(proto, calibration: torch.Tensor):
    """The int8 (QDQ) model of fp32 `proto`, its activation ranges calibrated on uint8 images `calibration`;
    the metadata kept. Weights int8 per output channel, activations uint8 (onnxruntime's advice for x86 CPUs)."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static

    with tempfile.TemporaryDirectory(prefix="nas-int8-") as tmp:
        pre, out = Path(tmp, "pre.onnx"), Path(tmp, "int8.onnx")
        quant_pre_process(proto, str(pre))  # shape inference and folding, as quantize_static expects
        quantize_static(str(pre), str(out), _Calibration(calibration), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
        quantised = onnx.load_from_string(out.read_bytes())
    del quantised.metadata_props[:]
    quantised.metadata_props.extend(proto.metadata_props)
    return quantised

