"""A network -> an ONNX model: images (N, C, H, W) in, logits out, any batch size."""
from __future__ import annotations

import io
import warnings

import torch

OPSET = 17
INPUT, OUTPUT = "images", "logits"


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
