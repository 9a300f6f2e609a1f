"""The int8 TFLite graph that the export (nas.deploy.tflite_export) gives a spec, predicted from the spec alone: the ops
litert-torch and ai-edge-quantizer emit for each block, and every tensor they make, activations and constants, with
exact shapes. nas.space.tflm_budget reads TFLM's arena and the file's size off it; unsupported_layers, what TFLM cannot run.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

from nas.space.build import output_shape
from nas.space.spec import ArchSpec, Block
from nas.space.blocks import Conv, Dropout, Flatten, GlobalAvgPool, Linear, Pool, Residual

INT8, INT32 = 1, 4  # bytes per value


@dataclass
class Const:
    """A constant tensor (weights, bias, a shape or axis list): stored in the flatbuffer, never in the arena."""

    shape: tuple[int, ...]
    itemsize: int
    channels: int  # quantisation scales it carries: one per output channel for weights and biases, else 1 or 0


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
    """The int8 TFLite graph of a spec: activation tensors (bytes and shape), ops in execution order."""

    sizes: list[int] = field(default_factory=list)
    shapes: list[tuple[int, ...]] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)

    def tensor(self, shape) -> int:
        self.sizes.append(math.prod(shape))
        self.shapes.append(tuple(shape))
        return len(self.sizes) - 1

    def op(self, kind: str, inputs, shape, consts=(), channels: int = 0) -> int:
        out = self.tensor(shape)
        self.ops.append(Op(kind, tuple(inputs), out, tuple(consts), channels))
        return out


@functools.lru_cache(maxsize=256)  # specs are frozen; arena and flash_bytes of one spec share its graph
def graph(spec: ArchSpec) -> Graph:
    """The ops and tensors of the spec's int8 export (the graph is shared between calls: do not change it)."""
    g = Graph()
    x = g.tensor(spec.input_shape)
    # the input normalisation, (x - mean) / std, its constants per channel: with one channel, the division folds into
    # a first conv's weights unless the conv needs a PAD op first, and the subtraction too if it pads nothing
    c = spec.input_shape[0]
    norm = Const(() if c == 1 else (1, 1, 1, c), INT8, 1)
    first = spec.blocks[0]
    folds = pad = False
    if c == 1 and isinstance(first, Conv):
        pad = first.k // 2 if first.padding is None else first.padding
        folds = _tf_padding(spec.input_shape, first.k, first.stride, pad)
    if not (folds and pad == 0):
        x = g.op("SUB", [x], spec.input_shape, [norm])
    if not folds:
        x = g.op("MUL", [x], spec.input_shape, [norm])
    _blocks(g, spec.blocks, x, tuple(spec.input_shape))
    return g


def _blocks(g: Graph, blocks: tuple[Block, ...], x: int, shape: tuple) -> tuple[int, tuple]:
    for block in blocks:
        if isinstance(block, Residual):  # body, shortcut (convs, or none: identity), ADD
            body, out = _blocks(g, block.body, x, shape)
            short, _ = _blocks(g, block.shortcut, x, shape)
            x, shape = g.op("ADD", [body, short], out), out
        elif isinstance(block, Conv):
            x, shape = _conv(g, block, x, shape)
        elif isinstance(block, Pool):
            x, shape = _pool(g, block, x, shape)
        else:
            x, shape = _head(g, block, x, shape)
    return x, shape


def _conv(g: Graph, block: Conv, x: int, shape: tuple) -> tuple[int, tuple]:
    """[PAD], CONV_2D or DEPTHWISE_CONV_2D with BatchNorm folded in and ReLU fused, [its activation's ops]."""
    out = output_shape(block, shape)
    pad = block.k // 2 if block.padding is None else block.padding
    if not _tf_padding(shape, block.k, block.stride, pad):  # TFLite pads SAME or VALID: else a PAD op
        c, h, w = shape
        x = g.op("PAD", [x], (c, h + 2 * pad, w + 2 * pad), [Const((4, 2), INT32, 0)])
    c_in, k = shape[0], block.k
    depthwise = block.depthwise or c_in == 1  # the converter makes a one-channel input's conv depthwise
    weights = Const((1, k, k, block.out) if depthwise else (block.out, k, k, c_in), INT8, block.out)
    bias = Const((block.out,), INT32, block.out)  # a zero one if the conv has none
    x = g.op("DEPTHWISE_CONV_2D" if depthwise else "CONV_2D", [x], out, [weights, bias], block.out)
    return _activation(g, block.act, x, out), out


def _pool(g: Graph, block: Pool, x: int, shape: tuple) -> tuple[int, tuple]:
    """MAX_POOL_2D (a ReLU nas.space.build moves after it fused); AVERAGE_POOL_2D, after a PAD and before a MUL in ceil
    mode."""
    out = output_shape(block, shape)
    c, h, w = shape
    _, oh, ow = out
    if block.op == "max":
        # ceil mode pads the ends, which SAME padding does when it is at most 1 (its smaller half before): else the
        # converter pads with the lowest int8 (PADV2) and pools VALID
        if block.ceil and max(oh * block.k - h, ow * block.k - w) > 1:
            x = g.op("PADV2", [x], (c, oh * block.k, ow * block.k), [Const((4, 2), INT32, 0), Const((), INT8, 1)])
        return g.op("MAX_POOL_2D", [x], out), out
    if block.ceil and (h % block.k or w % block.k):
        # ceil mode averages a partial window over its valid cells only: PAD, VALID pool, then a MUL by a
        # constant map of per-window corrections
        x = g.op("PAD", [x], (c, oh * block.k, ow * block.k), [Const((4, 2), INT32, 0)])
        x = g.op("AVERAGE_POOL_2D", [x], out)
        return g.op("MUL", [x], out, [Const((1, oh, ow, 1), INT8, 1)]), out
    return g.op("AVERAGE_POOL_2D", [x], out), out


def _head(g: Graph, block: Block, x: int, shape: tuple) -> tuple[int, tuple]:
    """MEAN for a global average pool; [TRANSPOSE], RESHAPE for a flatten; FULLY_CONNECTED; nothing for dropout."""
    out = output_shape(block, shape)
    if isinstance(block, GlobalAvgPool):
        return g.op("MEAN", [x], out, [Const((2,), INT32, 0)]), out
    if isinstance(block, Flatten):
        if shape[0] > 1 and math.prod(shape[1:]) > 1:  # NHWC to the NCHW order torch flattens in (else the same)
            x = g.op("TRANSPOSE", [x], shape, [Const((4,), INT32, 0)])
        return g.op("RESHAPE", [x], out, [Const((2,), INT32, 0)]), out
    if isinstance(block, Linear):
        consts = [Const((block.out, shape[0]), INT8, block.out)]
        consts += [Const((block.out,), INT32, block.out)] if block.bias else []
        x = g.op("FULLY_CONNECTED", [x], out, consts, block.out)
        return _activation(g, block.act, x, out), out
    if isinstance(block, Dropout):  # nothing at inference
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


def _activation(g: Graph, act: str, x: int, shape: tuple) -> int:
    if act == "silu":  # x * sigmoid(x)
        s = g.op("LOGISTIC", [x], shape)
        return g.op("MUL", [x, s], shape)
    if act == "gelu":
        return g.op("GELU", [x], shape)
    return x  # none, or relu: fused into the op before it


UNSUPPORTED = ("GELU",)  # ops the export emits that TFLM has no kernel for (its runtime: "Didn't find op")


def unsupported_layers(spec: ArchSpec) -> int:
    """How many ops of the spec's export TFLM has no kernel for (UNSUPPORTED): above 0, it cannot run the network."""
    return sum(op.kind in UNSUPPORTED for op in graph(spec).ops)
