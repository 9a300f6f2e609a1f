"""`describe` (the command): a network's layers, costs, recipe and data, from a weights file, a spec file or a
reference name; and the reader of those (`spec_from`), which `evaluate` shares."""
from __future__ import annotations

import json
import math
from pathlib import Path

from nas.data import DataInfo
from nas.deploy import export
from nas.space import references, tflite_graph, tflm_budget
from nas.space.budget import count_flops, count_params, layer_costs, peak_activation_bytes
from nas.space.spec import Candidate, SpecError


def spec_from(ref) -> tuple[Candidate, DataInfo | None]:
    """A weights file, a spec JSON file, a reference's name or a Candidate: the candidate, and the data it was
    trained on if the file says."""
    if isinstance(ref, Candidate):
        return ref, None
    path = Path(ref)
    if path.is_file():
        if path.suffix == ".safetensors":
            return export.read_spec(path)
        try:
            return export.read_spec_json(path.read_text(), str(path))
        except UnicodeDecodeError:
            raise SpecError(f"{path}: not a text JSON file") from None
    try:
        return references.by_name(ref), None
    except KeyError:
        raise SpecError(f"{ref}: no such file, and not a reference name ({', '.join(references.all_references())})") from None


def describe(path: str) -> int:
    print("\n".join(describe_lines(path)))
    return 0


def describe_lines(ref) -> list[str]:
    """Each block's output shape, parameters, MFLOPs and output bytes, then the totals and the peak memory."""
    candidate, data = spec_from(ref)
    spec = candidate.arch
    input_bytes = math.prod(spec.input_shape) * 4
    rows = [("input", "", str(tuple(spec.input_shape)), "", "", f"{input_bytes:,}")]
    costs = layer_costs(spec)
    for c in costs:
        rows.append((c.where, c.block, str(c.shape), f"{c.params:,}", f"{c.flops / 1e6:.3f}", f"{c.activation_bytes:,}"))
    width = max(len(r[1]) for r in rows)
    title = candidate.name or Path(str(ref)).name
    peak = peak_activation_bytes(spec)
    tflm, flash = tflm_budget.arena(spec), tflm_budget.flash_bytes(spec)
    return [
        f"{title}  (id {candidate.id})",
        f"{'layer':<11} {'block':<{width}} {'output shape':<16} {'params':>8} {'MFLOPs':>8} {'act bytes':>10}",
        *(f"{where:<11} {text:<{width}} {shape:<16} {params:>8} {mflops:>8} {act:>10}"
          for where, text, shape, params, mflops, act in rows),
        f"total: {count_params(spec):,} trainable parameters, {count_flops(spec) / 1e6:.3f} MFLOPs per image, "
        f"{input_bytes + sum(c.activation_bytes for c in costs):,} activation bytes in all",
        f"peak activation memory at batch 1: {peak:,} bytes at fp32 ({peak / 1024:.1f} KB), {peak // 4:,} at int8 "
        f"(the largest input plus output alive at once, residual inputs held)",
        f"on a microcontroller (int8, TFLM), predicted: arena {tflm.total:,} bytes ({tflm.head:,} activations + "
        f"{tflm.tail:,} persistent), flash {flash:,} bytes" + (
            f"; TFLM has no int8 kernel for {', '.join(tflite_graph.UNSUPPORTED)}, which it uses"
            if tflite_graph.unsupported_layers(spec) else ""),
        f"recipe: {json.dumps(candidate.recipe.to_dict())}",
        *data_lines(data, spec),
    ]


def data_lines(data: DataInfo | None, spec) -> list[str]:
    """What the network takes and gives: its data, input shape and normalisation, and its class names."""
    if data is None:
        return [f"data: not recorded; input {tuple(spec.input_shape)} normalised as in training, "
                f"{spec.num_classes} classes"]
    return [f"data: {data.source}",
            f"input: {tuple(data.shape)} scaled to [0, 1], normalised per channel by mean "
            f"({', '.join(f'{m:.4g}' for m in data.mean)}) and std ({', '.join(f'{s:.4g}' for s in data.std)})",
            f"classes ({len(data.classes)}): {', '.join(data.classes)}"]
