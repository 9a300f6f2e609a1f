"""What TensorFlow Lite Micro needs for a spec's full-integer int8 export, predicted from the spec alone.

The spec is first laid out as the int8 TFLite graph the export (nas.tflite_export) gives: the ops litert-torch and
ai-edge-quantizer emit for each block and every tensor they make, activations and constants, with exact shapes. From
that graph:

- the arena's head: TFLM's greedy memory planner replayed over the activation tensors (and the scratch buffers its
  kernels request), with TFLM's lifetimes and 16-byte alignment;
- the arena's tail: the persistent structs TFLM allocates per tensor and per op, each kernel's OpData and
  per-channel quantisation arrays, plus a fixed part (the allocator objects and the interpreter's input and output);
- the flash: the flatbuffer's byte size, summed per tensor, buffer and op, with each tensor's name as the converter
  spells it.

The struct sizes are those of the 64-bit TFLM build the project measures with (tflite_micro's Python runtime, its
reference kernels); on a 32-bit microcontroller pointers are half as wide, so the real tail is smaller and the
estimate stays a ceiling, but optimised kernels (CMSIS-NN) may ask for scratch buffers, which add to the head.
TFLM has no GELU kernel: see unsupported_layers. bench/tflm_arena.py checks every figure against TFLM and the files.
"""
from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field

from torch import nn

from nas.blocks import FastDropout, ResidualBlock
from nas.build import _relu_then_max_pool, output_shape
from nas.spec import ArchSpec, Block, Candidate, Conv, Dropout, Flatten, GlobalAvgPool, Linear, Pool, Residual

ALIGN = 16  # MicroArenaBufferAlignment(): every planned buffer and kernel allocation is rounded up to it


def _align(n: int, to: int = ALIGN) -> int:
    return -(-n // to) * to


# -- the graph ------------------------------------------------------------------------------------------------
INT8, INT32 = 1, 4  # bytes per value
INPUT_NAME, OUTPUT_NAME = "serving_default_args_0", "serving_default_output_0_output"  # the signature's tensors
# how litert-torch names a layer: the wrapped module, then each module on the path as "<class path>_<attribute>"
WRAPPER = "litert_torch._convert.to_channel_last_io.ChannelLastIOWrapper/nas.export.Normalised_wrapped"
ACTIVATION_LAYERS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}


@dataclass
class Const:
    """A constant tensor (weights, bias, a shape or axis list): stored in the flatbuffer, never in the arena."""

    shape: tuple[int, ...]
    itemsize: int
    channels: int  # quantisation scales it carries: one per output channel for weights and biases, else 1 or 0
    name: str


@dataclass
class Op:
    """One TFLite operator: its kind, activation inputs and output (tensor ids), and its constant inputs."""

    kind: str
    inputs: tuple[int, ...]
    output: int
    consts: tuple[Const, ...] = ()
    channels: int = 0  # output channels of a conv or fully connected op: its per-channel arrays


@dataclass
class Graph:
    """The int8 TFLite graph of a spec: activation tensors (bytes, shape, and name: the converter's location, made
    unique by _names), ops in execution order."""

    sizes: list[int] = field(default_factory=list)
    shapes: list[tuple[int, ...]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    first_act: dict = field(default_factory=dict)  # (activation kind, shape) -> the location of its first layer
    # the name a flatten's TRANSPOSE takes from the block right before it: an average pool's, a plainly named
    # add's, a fused ReLU's
    before_flatten: str = ""

    def tensor(self, shape, name: str) -> int:
        self.sizes.append(math.prod(shape))
        self.shapes.append(tuple(shape))
        self.names.append(name)
        return len(self.sizes) - 1

    def op(self, kind: str, inputs, shape, name: str, consts=(), channels: int = 0) -> int:
        out = self.tensor(shape, name)
        self.ops.append(Op(kind, tuple(inputs), out, tuple(consts), channels))
        return out

    def act_name(self, kind: str, shape, loc: str) -> str:
        """An activation's location, joined (";;") by that of the first activation of its kind and output shape:
        the converter merges their equal constants and fuses their names."""
        first = self.first_act.setdefault((kind, tuple(shape)), loc)
        return loc if first == loc else f"{loc};;{first}"


def _seg(cls, attribute) -> str:
    return f"{cls.__module__}.{cls.__qualname__}_{attribute}"


def _loc(path: tuple[str, ...]) -> str:
    return "/".join((WRAPPER, *path))


def _fuse(*locs: str) -> str:
    return ";;".join(loc for loc in locs if loc)


@functools.lru_cache(maxsize=256)  # specs are frozen; arena and flash_bytes of one spec share its graph
def graph(spec: ArchSpec) -> Graph:
    """The ops and tensors of the spec's int8 export, each tensor with the name the converter gives it (the
    graph is shared between calls: do not change it)."""
    g = Graph()
    x = g.tensor(spec.input_shape, INPUT_NAME)
    # the input normalisation, (x - mean) / std: the division folds into a first conv's weights, unless the conv
    # needs a PAD op first
    x = g.op("SUB", [x], spec.input_shape, WRAPPER, [Const((), INT8, 1, WRAPPER)])
    first = spec.blocks[0]
    if not (isinstance(first, Conv) and _tf_padding(spec.input_shape, first.k, first.stride,
                                                     first.k // 2 if first.padding is None else first.padding)):
        x = g.op("MUL", [x], spec.input_shape, WRAPPER, [Const((), INT8, 1, WRAPPER)])
    _blocks(g, spec.blocks, x, tuple(spec.input_shape), ())
    g.names[-1] = OUTPUT_NAME
    return g


def _blocks(g: Graph, blocks: tuple[Block, ...], x: int, shape: tuple, path: tuple) -> tuple[int, tuple]:
    for i, block in enumerate(blocks):
        # nas.build runs a ReLU right before a max pool after it instead, in the pool's module
        moved = (i + 1 < len(blocks) and _relu_then_max_pool(block, blocks[i + 1])
                 or i > 0 and _relu_then_max_pool(blocks[i - 1], block))
        before, g.before_flatten = g.before_flatten, ""
        if isinstance(block, Residual):
            x, shape = _residual(g, block, x, shape, (*path, _seg(ResidualBlock, i)))
        elif isinstance(block, Conv):
            x, shape = _conv(g, block, x, shape, _layers(path, i, _conv_layers(block)), moved)
        elif isinstance(block, Pool):
            x, shape = _pool(g, block, x, shape, path, i, moved)
        else:
            x, shape = _head(g, block, x, shape, path, i, before)
    return x, shape


def _layers(path: tuple, attribute, classes: list) -> list[str]:
    """The locations of a block's layers: a lone layer is the block's module, several make a Sequential."""
    if len(classes) == 1:
        return [_loc((*path, _seg(classes[0], attribute)))]
    inner = (*path, _seg(nn.Sequential, attribute))
    return [_loc((*inner, _seg(cls, j))) for j, cls in enumerate(classes)]


def _residual(g: Graph, block: Residual, x: int, shape: tuple, path: tuple) -> tuple[int, tuple]:
    """Body, shortcut (convs, or none: identity), ADD."""
    body, out = _blocks(g, block.body, x, shape, (*path, _seg(nn.Sequential, "body")))
    short, _ = _blocks(g, block.shortcut, x, shape, (*path, _seg(nn.Sequential, "shortcut")))
    # the add's name takes in a neighbour's, as measured: a conv shortcut's after a body ending in a separate
    # activation op; the body's last ReLU's with an identity shortcut from a max pool, or from an add so named
    last = block.body[-1]
    relu = isinstance(last, Conv) and last.act == "relu"
    source = next((op.kind for op in reversed(g.ops) if op.output == x), "")
    fused = ""
    if block.shortcut and not relu:
        fused = g.names[short]
    elif not block.shortcut and relu and (source == "MAX_POOL_2D" or source == "ADD" and ";;" in g.names[x]):
        locs = _layers((*path, _seg(nn.Sequential, "body")), len(block.body) - 1, _conv_layers(last))
        fused = g.act_name("relu", out, locs[1 + last.bn])
    g.before_flatten = "" if fused else _loc(path)
    return g.op("ADD", [body, short], out, _fuse(_loc(path), fused)), out


def _conv(g: Graph, block: Conv, x: int, shape: tuple, locs: list[str], relu_moved: bool) -> tuple[int, tuple]:
    """[PAD], CONV_2D or DEPTHWISE_CONV_2D with BatchNorm folded in and ReLU fused, [its activation's ops]."""
    out = output_shape(block, shape)
    conv = _fuse(*reversed(locs[:1 + block.bn]))  # "bn;;conv"; locs: conv, [bn], [activation], [dropout]
    relu = g.act_name("relu", out, locs[1 + block.bn]) if block.act == "relu" and not relu_moved else ""
    pad = block.k // 2 if block.padding is None else block.padding
    if not _tf_padding(shape, block.k, block.stride, pad):  # TFLite pads SAME or VALID: else a PAD op
        c, h, w = shape
        x = g.op("PAD", [x], (c, h + 2 * pad, w + 2 * pad), locs[0], [Const((4, 2), INT32, 0, locs[0])])
    # the input normalisation's 1/std folds into a conv right after its SUB, whose weights then also take the
    # name of the conv's fused ReLU
    folded = g.ops[-1].kind == "SUB"
    c_in, k = shape[0], block.k
    depthwise = block.depthwise or c_in == 1  # the converter makes a one-channel input's conv depthwise
    weights = Const((1, k, k, block.out) if depthwise else (block.out, k, k, c_in), INT8, block.out,
                    _fuse(relu if folded else "", conv))
    bias = Const((block.out,), INT32, block.out, _fuse(relu, conv))  # a zero one if the conv has none
    x = g.op("DEPTHWISE_CONV_2D" if depthwise else "CONV_2D", [x], out, _fuse(relu, conv), [weights, bias],
             block.out)
    g.before_flatten = relu
    return _activation(g, block.act, x, out, locs[1 + block.bn] if block.act != "none" else ""), out


def _pool(g: Graph, block: Pool, x: int, shape: tuple, path: tuple, at: int, relu_moved: bool):
    """MAX_POOL_2D (a ReLU moved after it fused); AVERAGE_POOL_2D, after a PAD and before a MUL in ceil mode."""
    out = output_shape(block, shape)
    c, h, w = shape
    if block.op == "max":  # ceil mode is SAME padding, which a max ignores
        if relu_moved:
            pool, relu = _layers(path, at, [nn.MaxPool2d, nn.ReLU])
            return g.op("MAX_POOL_2D", [x], out, _fuse(g.act_name("relu", out, relu), pool)), out
        return g.op("MAX_POOL_2D", [x], out, _layers(path, at, [nn.MaxPool2d])[0]), out
    loc = g.before_flatten = _layers(path, at, [nn.AvgPool2d])[0]
    if block.ceil and (h % block.k or w % block.k):
        # ceil mode averages a partial window over its valid cells only: PAD, VALID pool, then a MUL by a
        # constant map of per-window corrections
        _, oh, ow = out
        consts = [Const((1, oh, ow, 1), INT8, 1, loc), Const((4, 2), INT32, 0, loc)]
        x = g.op("PAD", [x], (c, oh * block.k, ow * block.k), loc, consts[1:])
        x = g.op("AVERAGE_POOL_2D", [x], out, loc)
        return g.op("MUL", [x], out, loc, consts[:1]), out
    return g.op("AVERAGE_POOL_2D", [x], out, loc), out


def _head(g: Graph, block: Block, x: int, shape: tuple, path: tuple, at: int, before: str) -> tuple[int, tuple]:
    """MEAN for a global average pool; [TRANSPOSE], RESHAPE for a flatten; FULLY_CONNECTED; nothing for dropout."""
    out = output_shape(block, shape)
    if isinstance(block, GlobalAvgPool):
        loc = _layers(path, at, [nn.AdaptiveAvgPool2d, nn.Flatten])[0]
        return g.op("MEAN", [x], out, loc, [Const((2,), INT32, 0, loc)]), out
    if isinstance(block, Flatten):
        loc = _layers(path, at, [nn.Flatten])[0]
        if math.prod(shape[1:]) > 1:  # NHWC to the NCHW order torch flattens in; its permutation is unnamed
            x = g.op("TRANSPOSE", [x], shape, before or loc, [Const((4,), INT32, 0, "arith.constant")])
        return g.op("RESHAPE", [x], out, loc, [Const((2,), INT32, 0, loc)]), out
    if isinstance(block, Linear):
        locs = _layers(path, at, [nn.Linear] + ([] if block.act == "none" else [ACTIVATION_LAYERS[block.act]]))
        relu = g.act_name("relu", out, locs[1]) if block.act == "relu" else ""  # fused: it names the output
        consts = [Const((block.out, shape[0]), INT8, block.out, locs[0])]
        consts += [Const((block.out,), INT32, block.out, locs[0])] if block.bias else []
        x = g.op("FULLY_CONNECTED", [x], out, _fuse(locs[0], relu), consts, block.out)
        return _activation(g, block.act, x, out, locs[-1]), out
    if isinstance(block, Dropout):
        g.before_flatten = before  # nothing at inference
        return x, shape
    raise TypeError(f"no TFLite layout for block {block!r}")


def _tf_padding(shape: tuple, k: int, stride: int, pad: int) -> bool:
    """Whether torch's symmetric padding `pad` is TFLite's VALID (none) or SAME (output ceil(n / stride), the
    smaller half of the padding before) on both sides of the map."""
    if pad == 0:
        return True
    for n in shape[1:]:
        total = max((-(-n // stride) - 1) * stride + k - n, 0)
        if (n + 2 * pad - k) // stride + 1 != -(-n // stride) or pad != total // 2:
            return False
    return True


def _conv_layers(block: Conv) -> list:
    """The layer classes of a conv block, as Conv.build makes them."""
    acts = [] if block.act == "none" else [ACTIVATION_LAYERS[block.act]]
    return [nn.Conv2d] + [nn.BatchNorm2d] * block.bn + acts + [FastDropout] * bool(block.dropout)


def _activation(g: Graph, act: str, x: int, shape: tuple, loc: str) -> int:
    if act == "silu":  # x * sigmoid(x)
        s = g.op("LOGISTIC", [x], shape, g.act_name("silu", shape, loc))
        return g.op("MUL", [x, s], shape, loc)
    if act == "gelu":
        return g.op("GELU", [x], shape, loc)
    return x  # none, or relu: fused into the op before it


UNSUPPORTED = ("GELU",)  # ops the export emits that TFLM has no kernel for (its runtime: "Didn't find op")


def unsupported_layers(spec: ArchSpec) -> int:
    """How many ops of the spec's export TFLM has no kernel for (UNSUPPORTED): above 0, it cannot run the network."""
    return sum(op.kind in UNSUPPORTED for op in graph(spec).ops)


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
# here (they come out 0 to 24 bytes under their estimate)
FIXED_TAIL = 496
# sizeof the TfLite*Params each op's options are parsed into (tensorflow/lite/core/c/builtin_op_data.h), 4-aligned;
# FULLY_CONNECTED's 32 is measured (its params struct is 16: the op allocates 16 more bytes outside the categories)
BUILTIN = {"CONV_2D": 28, "DEPTHWISE_CONV_2D": 28, "MAX_POOL_2D": 40, "AVERAGE_POOL_2D": 40, "FULLY_CONNECTED": 32,
           "ADD": 8, "SUB": 8, "MUL": 4, "MEAN": 4, "RESHAPE": 36, "GELU": 4}
# What each kernel allocates persistently, each allocation rounded up to ALIGN: its OpData and, for conv and fully
# connected ops, the per-channel output multipliers and shifts (int32 each). Sizes as measured through TFLM's
# recording allocator; GELU has no TFLM kernel, so its entry assumes TFLite's: a 256-entry int8 lookup table.
KERNEL = {"CONV_2D": (80,), "DEPTHWISE_CONV_2D": (80,), "FULLY_CONNECTED": (72,), "MAX_POOL_2D": (32,),
          "AVERAGE_POOL_2D": (32,), "ADD": (60,), "SUB": (60,), "MUL": (48,), "LOGISTIC": (4,), "PAD": (44, 16),
          "MEAN": (40, 4, 8), "TRANSPOSE": (4,), "RESHAPE": (4,), "GELU": (4, 256)}


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
# The file is a flatbuffer that nas.tflite_export.with_metadata writes with the flatbuffers Python builder: strings
# and vectors carry a 4-byte length and are padded to 4 bytes; tables a 4-byte vtable offset and their fields.
SCALE_BYTES = 4 + 8  # each quantisation channel: a float32 scale and an int64 zero point
# The per-item bytes below are a least-squares fit of what remains of 81 exported files (draws of networks as
# bench/tflm_arena.py makes them, and a few edge cases) once names, constant data, metadata, scales, shape dims and
# op inputs are counted exactly (the names of all 81 to the byte). What is left is the flatbuffer builder's padding
# and vtable sharing, about +-60 bytes: FIXED_FLASH is the fit's constant plus its largest shortfall and 64 bytes,
# so that the estimate is a ceiling.
PER_OP = 83  # an op's table and input/output vector headers, its output tensor's table and quantisation headers
PER_CONST = 79  # a constant's tensor table and quantisation headers, its buffer's table
PER_UNSCALED = 10  # a constant with an empty quantisation (a shape, axis or padding list)
PER_AXIS = 9  # a depthwise conv's weights, quantised along their last dimension
PER_OPTIONS = 7  # an op's options table
FIXED_FLASH = 1120  # the model, subgraph, signature, operator-code and metadata tables, the converter's metadata
NO_OPTIONS = {"TRANSPOSE", "RESHAPE", "LOGISTIC"}
METADATA_KEYS = ("nas.candidate", "nas.data", "nas.input")  # nas.tflite_export's SPEC_KEY, DATA_KEY, INPUT_KEY


def _string(n: int) -> int:
    """A flatbuffer string of n bytes: length, bytes, a NUL, padding to 4."""
    return _align(4 + n + 1, 4)


def _names(g: Graph) -> list[str]:
    """Every tensor's name, as the converter makes them unique: the first of a name gets ";", the next ";1", ..."""
    names, seen = [g.names[0]], {}
    for op in g.ops:
        for name in [c.name for c in op.consts] + [g.names[op.output]]:
            if name in (INPUT_NAME, OUTPUT_NAME, "arith.constant"):
                names.append(name)
                continue
            k = seen[name] = seen.get(name, -1) + 1
            names.append(f"{name};{k or ''}")
    return names


def flash_features(g: Graph) -> dict[str, int]:
    """The counts the file size is made of."""
    consts = [c for op in g.ops for c in op.consts]
    return dict(
        names=sum(_string(len(n)) for n in _names(g)),
        data=sum(_align(4 + math.prod(c.shape) * c.itemsize, 4) for c in consts),
        dims=sum(len(s) + 1 for s in g.shapes) + sum(len(c.shape) for c in consts),
        channels=len(g.shapes) + sum(c.channels for c in consts),
        # a fully connected op without bias lists it as -1
        io=sum(len(op.inputs) + max(len(op.consts), 2 * (op.kind == "FULLY_CONNECTED")) + 1 for op in g.ops),
        ops=len(g.ops), consts=len(consts), unscaled=sum(not c.channels for c in consts),
        axis=sum(op.kind == "DEPTHWISE_CONV_2D" for op in g.ops),
        options=sum(op.kind not in NO_OPTIONS for op in g.ops))


def flash_bytes(spec: ArchSpec, metadata_bytes: int | None = None) -> int:
    """The byte size of the spec's int8 .tflite file as nas.tflite_export writes it (int8_flatbuffer, then
    with_metadata), `metadata_bytes` being the length of the metadata text it embeds (metadata_bytes(candidate,
    data)); without it, the most a candidate of this spec on MNIST-like data embeds (spec_metadata_bytes). A
    ceiling, 0.1% to 1.2% over the file for the benchmark's networks (up to 2% for files under 10 KB)."""
    f = flash_features(graph(spec))
    metadata = spec_metadata_bytes(spec) if metadata_bytes is None else metadata_bytes
    return (FIXED_FLASH + f["names"] + f["data"] + _align(4 + metadata, 4) + 4 * len(METADATA_KEYS)
            + SCALE_BYTES * f["channels"] + 4 * f["dims"] + 4 * f["io"] + PER_OP * f["ops"] + PER_CONST * f["consts"]
            + PER_UNSCALED * f["unscaled"] + PER_AXIS * f["axis"] + PER_OPTIONS * f["options"])


FLOAT_CHARS, ZERO_POINT_CHARS = 22, 4  # the longest repr of a float below 1 (1.2345678901234567e-05); -128
# spec_metadata_bytes's bounds on what a spec does not say: a recipe's floats at their longest, and MNIST-like data
RECIPE_FLOATS, CLASS_NAME_CHARS, SOURCE_CHARS = 7, 16, 16


def metadata_bytes(candidate: Candidate, data) -> int:
    """The length of the metadata text nas.tflite_export.with_metadata embeds for `candidate` trained on `data` (a
    nas.data.DataInfo): the candidate's JSON, the data's, and the input's quantisation, whose scale and zero point
    are taken at their longest."""
    return (len(candidate.to_json().encode()) + len(json.dumps(data.to_dict(), sort_keys=True).encode())
            + _quantisation_chars(data.shape))


def spec_metadata_bytes(spec: ArchSpec) -> int:
    """An upper bound on metadata_bytes for any candidate of `spec` whose data has class names and a source of at
    most CLASS_NAME_CHARS and SOURCE_CHARS characters (MNIST's: 8 and 5): the spec's JSON exactly, its recipe's
    floats at their longest, the data's mean and std too."""
    c = spec.input_shape[0]
    recipe = len(Candidate(arch=spec).to_json()) + RECIPE_FLOATS * FLOAT_CHARS
    data = json.dumps({"classes": [""] * spec.num_classes, "mean": [0.0] * c, "shape": list(spec.input_shape),
                       "source": "", "std": [0.0] * c}, sort_keys=True)
    return (recipe + len(data) + spec.num_classes * CLASS_NAME_CHARS + SOURCE_CHARS + 2 * c * FLOAT_CHARS
            + _quantisation_chars(spec.input_shape))


def _quantisation_chars(shape: tuple[int, int, int]) -> int:
    """The length of with_metadata's input-quantisation JSON, its scale and zero point at their longest."""
    c, h, w = shape
    text = json.dumps({"layout": "NHWC", "shape": [1, h, w, c], "dtype": "int8", "scale": 0.0, "zero_point": 0})
    return len(text) - len("0.0") - len("0") + FLOAT_CHARS + ZERO_POINT_CHARS
