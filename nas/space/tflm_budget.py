"""What TensorFlow Lite Micro needs for a spec's full-integer int8 export, predicted from the spec alone.

The spec is first laid out as the int8 TFLite graph the export gives (nas.space.tflite_graph). From that graph:

- the arena's head: TFLM's greedy memory planner replayed over the activation tensors (and the scratch buffers its
  kernels request), with TFLM's lifetimes and 16-byte alignment;
- the arena's tail: the persistent structs TFLM allocates per tensor and per op, each kernel's OpData and
  per-channel quantisation arrays, plus a fixed part (the allocator objects and the interpreter's input and output);
- the flash: the flatbuffer's byte size, summed per tensor, buffer and op (the file has no tensor names).

The struct sizes are those of the 64-bit TFLM build the project measures with (tflite_micro's Python runtime, its
reference kernels); on a 32-bit microcontroller pointers are half as wide, so the real tail is smaller and the
estimate stays a ceiling, but optimised kernels (CMSIS-NN) may ask for scratch buffers, which add to the head.
TFLM has no GELU kernel: see nas.space.tflite_graph.unsupported_layers. bench/tflm_arena.py checks every figure against
TFLM and the files.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

from nas.space.spec import ArchSpec, Candidate
from nas.space.tflite_graph import Graph, Op, graph

ALIGN = 16  # MicroArenaBufferAlignment(): every planned buffer and kernel allocation is rounded up to it


def _align(n: int, to: int = ALIGN) -> int:
    return -(-n // to) * to


# -- the head: TFLM's greedy memory planner -------------------------------------------------------------------
SCRATCH = {"MEAN": lambda g, op: 4 * g.sizes[op.output]}  # bytes a kernel requests in the arena: MEAN's int32 sums


def _buffers(g: Graph) -> list[tuple[int, int, int]]:
    """(aligned size, first, last) of each planned buffer, in TFLM's order: tensors by index (the input, then the
    op outputs in order, as the converter numbers them), then scratch buffers. Op i runs at time i + 1."""
    first, last = {0: 0}, {0: 0}
    scratch = []
    for i, op in enumerate(g.ops, 1):
        first[op.output] = last[op.output] = i
        for t in op.inputs:
            last[t] = i
        if op.kind in SCRATCH:
            scratch.append((_align(SCRATCH[op.kind](g, op)), i, i))
    last[len(g.sizes) - 1] = len(g.ops)  # the model's output lives to the end
    return [(_align(size), first[t], last[t]) for t, size in enumerate(g.sizes)] + scratch


def planned_head(buffers: list[tuple[int, int, int]]) -> int:
    """GreedyMemoryPlanner::GetMaximumMemorySize (tflite-micro, greedy_memory_planner.cc): buffers taken largest
    first (a stable sort of them listed last to first), each put at the lowest offset clear of every placed
    buffer alive at the same time; the highest end."""
    order = sorted(reversed(range(len(buffers))), key=lambda i: -buffers[i][0])
    placed: list[tuple[int, int]] = []  # (offset, buffer), by offset
    for i in order:
        size, first, last = buffers[i]
        offset = 0
        for at, j in placed:
            _, start, end = buffers[j]
            if start > last or first > end:  # not alive at the same time
                continue
            if at - offset >= size:
                break
            offset = max(offset, at + buffers[j][0])
        placed.append((offset, i))
        placed.sort(key=lambda p: p[0])
    return max((at + buffers[i][0] for at, i in placed), default=0)


# -- the tail: TFLM's persistent allocations ------------------------------------------------------------------
EVAL_TENSOR = 24  # sizeof(TfLiteEvalTensor): data and dims pointers, type; one per tensor, constants included
NODE = 64  # sizeof(NodeAndRegistration): a TfLiteNode and its registration pointer; one per op
IO_TENSORS = 2 * (64 + 2 * 16)  # the interpreter's input and output TfLiteTensor, each with its quantisation
SCRATCH_HANDLE = 8  # sizeof(ScratchBufferHandle), one per scratch buffer a kernel requests
# The allocator objects (arena, planner, recording allocator, builtin-data allocator, SubgraphAllocations) and the
# alignment slack between allocations, as measured: the most any of 70 measured tails had beyond the rest counted
# here, plus 16 for a one-channel network whose slack came out 8 bytes more (tails come out 0 to 40 bytes under)
FIXED_TAIL = 512
# sizeof the TfLite*Params each op's options are parsed into (tensorflow/lite/core/c/builtin_op_data.h), 4-aligned;
# FULLY_CONNECTED's 32 is measured (its params struct is 16: the op allocates 16 more bytes outside the categories)
BUILTIN = {"CONV_2D": 28, "DEPTHWISE_CONV_2D": 28, "MAX_POOL_2D": 40, "AVERAGE_POOL_2D": 40, "FULLY_CONNECTED": 32,
           "ADD": 8, "SUB": 8, "MUL": 4, "MEAN": 4, "RESHAPE": 36, "GELU": 4}
# What each kernel allocates persistently, each allocation rounded up to ALIGN: its OpData and, for conv and fully
# connected ops, the per-channel output multipliers and shifts (int32 each). Sizes as measured through TFLM's
# recording allocator; GELU has no TFLM kernel, so its entry assumes TFLite's: a 256-entry int8 lookup table.
KERNEL = {"CONV_2D": (80,), "DEPTHWISE_CONV_2D": (80,), "FULLY_CONNECTED": (72,), "MAX_POOL_2D": (32,),
          "AVERAGE_POOL_2D": (32,), "ADD": (60,), "SUB": (60,), "MUL": (48,), "LOGISTIC": (4,), "PAD": (44, 16),
          "PADV2": (44, 16), "MEAN": (40, 4, 8), "TRANSPOSE": (4,), "RESHAPE": (4,), "GELU": (4, 256)}


def _kernel_bytes(op: Op) -> int:
    sizes = KERNEL[op.kind] + ((4 * op.channels,) * 2 if op.channels else ())
    return sum(_align(s) for s in sizes)


def _tail(g: Graph) -> int:
    tensors = len(g.sizes) + sum(len(op.consts) for op in g.ops)
    builtin = 0
    for op in g.ops:  # each op's options struct, 4-aligned, one after another
        builtin = _align(builtin, 4) + BUILTIN.get(op.kind, 0)
    # structs (8- or 4-aligned) come first, then the kernels' 16-aligned allocations, then the scratch handles
    structs = _align(EVAL_TENSOR * tensors + NODE * len(g.ops) + builtin)
    kernels = sum(_kernel_bytes(op) + SCRATCH_HANDLE * (op.kind in SCRATCH) for op in g.ops)
    return FIXED_TAIL + IO_TENSORS + structs + kernels


@dataclass(frozen=True)
class TflmArena:
    """A predicted TFLM tensor arena, in bytes: activations (head) and persistent data (tail)."""

    head: int
    tail: int

    @property
    def total(self) -> int:
        return self.head + self.tail


def arena(spec: ArchSpec) -> TflmArena:
    """The tensor arena TFLM needs to run the spec's int8 export: the head exactly as TFLM's greedy planner lays
    the activations out, the tail an upper bound on its persistent data. TFLM cannot run a network with an op it
    has no kernel for (see unsupported_layers); its estimate assumes TFLite's kernel for it."""
    g = graph(spec)
    return TflmArena(planned_head(_buffers(g)), _tail(g))


# -- the flash: the .tflite file's bytes ----------------------------------------------------------------------
# The file is a flatbuffer that nas.deploy.tflite_export.with_metadata writes with the flatbuffers Python builder, without
# tensor names or signatures: vectors carry a 4-byte length and are padded to 4 bytes; tables a 4-byte vtable offset
# and their fields, and tables of one layout share a vtable.
SCALE_BYTES = 4 + 8  # each quantisation channel: a float32 scale and an int64 zero point
# the bytes of an op's options table (strides, filter, padding, fused activation, at most); empty (4) for others
OPTIONS = {"CONV_2D": 16, "DEPTHWISE_CONV_2D": 20, "MAX_POOL_2D": 24, "AVERAGE_POOL_2D": 24, "FULLY_CONNECTED": 8,
           "TRANSPOSE": 0, "RESHAPE": 0, "LOGISTIC": 0}
# The per-item bytes: a least-squares fit, rounded up, on 143 exported files (126 networks drawn as bench/tflm_arena.py
# draws them, seeds 10-14, and 17 hand-written ones); FIXED_FLASH is its largest remainder plus 32 bytes: a ceiling.
PER_OP = 78  # an op's table and input/output vector headers, its output tensor's table and quantisation headers
PER_CONST = 72  # a constant's tensor table and quantisation headers, its buffer's table
PER_UNSCALED = -31  # a constant with an empty quantisation (a shape, axis or padding list): no scale or zero point
PER_AXIS = 4  # a depthwise conv's weights, quantised along their last dimension
PER_KIND = 25  # each kind of op: its operator code, the vtables of its tables
FIXED_FLASH = 743  # the model, subgraph, buffer-0 and input tensor tables, the converter's and the metadata's entries


def flash_features(g: Graph) -> dict[str, int]:
    """The counts the file size is made of."""
    consts = [c for op in g.ops for c in op.consts]
    return dict(
        data=sum(_align(4 + math.prod(c.shape) * c.itemsize, 4) for c in consts),
        dims=sum(len(s) + 1 for s in g.shapes) + sum(len(c.shape) for c in consts),
        channels=len(g.shapes) + sum(c.channels for c in consts),
        # a fully connected op without bias lists it as -1
        io=sum(len(op.inputs) + max(len(op.consts), 2 * (op.kind == "FULLY_CONNECTED")) + 1 for op in g.ops),
        options=sum(OPTIONS.get(op.kind, 4) for op in g.ops),
        ops=len(g.ops), consts=len(consts), unscaled=sum(not c.channels for c in consts),
        axis=sum(op.kind == "DEPTHWISE_CONV_2D" for op in g.ops), kinds=len({op.kind for op in g.ops}))


def flash_bytes(spec: ArchSpec, metadata_bytes: int | None = None) -> int:
    """The byte size of the spec's int8 .tflite file as nas.deploy.tflite_export writes it (int8_model), `metadata_bytes`
    being the length of the metadata text it embeds (metadata_bytes(candidate, data)); without it, the most a
    candidate of this spec on MNIST-like data embeds (spec_metadata_bytes). A ceiling, 0.2% to 1.1% over the file
    for the benchmark's networks (up to 3% for files under 5 KB)."""
    f = flash_features(graph(spec))
    metadata = spec_metadata_bytes(spec) if metadata_bytes is None else metadata_bytes
    return (FIXED_FLASH + f["data"] + _align(metadata, 4) + SCALE_BYTES * f["channels"] + 4 * (f["dims"] + f["io"])
            + f["options"] + PER_OP * f["ops"] + PER_CONST * f["consts"] + PER_UNSCALED * f["unscaled"]
            + PER_AXIS * f["axis"] + PER_KIND * f["kinds"])


FLOAT_CHARS, ZERO_POINT_CHARS = 22, 4  # the longest repr of a float below 1 (1.2345678901234567e-05); -128
# spec_metadata_bytes's bounds on what a spec does not say: a recipe's floats at their longest, and MNIST-like data
RECIPE_FLOATS, CLASS_NAME_CHARS, SOURCE_CHARS = 7, 16, 16


def metadata_bytes(candidate: Candidate, data) -> int:
    """The length of the metadata text nas.deploy.tflite_export.with_metadata embeds for `candidate` trained on `data` (a
    nas.data.DataInfo): the candidate's JSON, the data's, and the input's quantisation, whose scale and zero point
    are taken at their longest."""
    return (len(candidate.to_json().encode()) + len(json.dumps(data.to_dict(), sort_keys=True).encode())
            + _quantisation_chars(data.shape))


def spec_metadata_bytes(spec: ArchSpec, data=None) -> int:
    """An upper bound on metadata_bytes for any candidate of `spec`: the spec's JSON exactly, its recipe's floats at
    their longest; the JSON of `data` (a nas.data.DataInfo) if given, else a bound for data whose class names and
    source have at most CLASS_NAME_CHARS and SOURCE_CHARS characters (MNIST's: 8 and 5)."""
    c = spec.input_shape[0]
    recipe = len(Candidate(arch=spec).to_json()) + RECIPE_FLOATS * FLOAT_CHARS
    if data is not None:
        return recipe + len(json.dumps(data.to_dict(), sort_keys=True)) + _quantisation_chars(spec.input_shape)
    data = json.dumps({"classes": [""] * spec.num_classes, "mean": [0.0] * c, "shape": list(spec.input_shape),
                       "source": "", "std": [0.0] * c}, sort_keys=True)
    return (recipe + len(data) + spec.num_classes * CLASS_NAME_CHARS + SOURCE_CHARS + 2 * c * FLOAT_CHARS
            + _quantisation_chars(spec.input_shape))


def _quantisation_chars(shape: tuple[int, int, int]) -> int:
    """The length of with_metadata's input-quantisation JSON, its scale and zero point at their longest."""
    c, h, w = shape
    text = json.dumps({"layout": "NHWC", "shape": [1, h, w, c], "dtype": "int8", "scale": 0.0, "zero_point": 0})
    return len(text) - len("0.0") - len("0") + FLOAT_CHARS + ZERO_POINT_CHARS
