"""Latency of a spec's untrained network on this machine: onnxruntime, batch 1, one thread, median of 30 runs.

A latency is this machine's, under its current load: a budget in milliseconds means nothing on another device."""
from __future__ import annotations

import functools
import statistics
import time

import numpy as np

from nas.space.build import build
from nas.data import DataInfo
from nas.deploy.export import Normalised
from nas.deploy.onnx_export import INPUT, onnx_bytes
from nas.deploy.onnx_export import session as onnx_session
from nas.space.spec import ArchSpec

WARMUP, RUNS = 5, 30


@functools.lru_cache(maxsize=1024)  # the width search and the filter ask for the same specs
def latency_ms(spec: ArchSpec) -> float:
    """Median milliseconds of one forward pass of one image through the network as exported (normalisation
    included), after WARMUP runs."""
    channels = spec.input_shape[0]
    info = DataInfo("latency", tuple(spec.input_shape), tuple(map(str, range(spec.num_classes))), (0.5,) * channels,
                    (0.25,) * channels)
    model = Normalised(build(spec, seed=0), info)
    session = onnx_session(onnx_bytes(model, spec.input_shape), "the latency check", threads=1)
    feed = {INPUT: np.random.default_rng(0).random((1, *spec.input_shape), dtype=np.float32)}
    for _ in range(WARMUP):
        session.run(None, feed)
    times = []
    for _ in range(RUNS):
        start = time.perf_counter_ns()
        session.run(None, feed)
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times) / 1e6
