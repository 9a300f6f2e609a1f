"""nas.deploy.latency: a spec's latency on this machine, the median milliseconds of RUNS forward passes of one image
through the network as exported (normalisation included) after WARMUP untimed runs, measured once per spec."""
import types

import pytest

from nas.deploy import latency
from nas.deploy.export import Normalised
from nas.deploy.latency import RUNS, WARMUP, latency_ms
from nas.deploy.onnx_export import INPUT
from nas.space.blocks import Conv, GlobalAvgPool, Linear
from nas.space.spec import ArchSpec

SMALL = ArchSpec((Conv(4), GlobalAvgPool(), Linear(2)), (1, 8, 8), 2)  # 4.6 kFLOPs
BIG = ArchSpec((Conv(32, act="relu"), Conv(64, act="relu"), Conv(64, act="relu"), GlobalAvgPool(), Linear(2)),
               (1, 32, 32), 2)  # 114 MFLOPs


def test_a_network_of_far_more_flops_is_slower_and_each_spec_is_measured_once():
    """A network of 25,000 times the FLOPs is measured well over 5 times slower, and its figure is kept: the same
    spec, or an equal one, is not measured again."""
    big = latency_ms(BIG)
    assert big > 5 * latency_ms(SMALL)
    hits = latency_ms.cache_info().hits
    equal = ArchSpec(tuple(BIG.blocks), tuple(BIG.input_shape), BIG.num_classes)
    assert equal is not BIG and latency_ms(equal) == big
    assert latency_ms.cache_info().hits == hits + 1


def test_the_figure_is_the_median_of_the_timed_runs_in_milliseconds_after_the_warmup(monkeypatch):
    """Against a clock that makes timed run k (k = 1..RUNS, in a scrambled order) take k^2 microseconds: the median is
    240.5 us (the mean would be 315.2), the warmup runs are not timed, and every run is one image, on one thread,
    through the network with its normalisation."""
    durations = [((i * 7) % RUNS + 1) ** 2 * 1000 for i in range(RUNS)]  # ns; 7 is prime to 30: each k once
    ticks, runs, models = [], [], []

    def perf_counter_ns():
        now = (ticks[-1] + durations[len(ticks) // 2]) if len(ticks) % 2 else (ticks[-1] if ticks else 0)
        ticks.append(now)
        return now

    real_session, real_bytes = latency.onnx_session, latency.onnx_bytes

    def session(proto, where, threads=None):
        inner = real_session(proto, where, threads=threads)
        return types.SimpleNamespace(run=lambda names, feed: runs.append((threads, {k: v.shape for k, v in
                                                                                    feed.items()}))
                                     or inner.run(names, feed))

    monkeypatch.setattr(latency, "time", types.SimpleNamespace(perf_counter_ns=perf_counter_ns))
    monkeypatch.setattr(latency, "onnx_session", session)
    monkeypatch.setattr(latency, "onnx_bytes", lambda model, shape: models.append(model) or real_bytes(model, shape))
    assert latency_ms.__wrapped__(SMALL) == pytest.approx(0.2405)  # uncached: the fake clock's figure is not kept
    assert len(ticks) == 2 * RUNS
    assert runs == [(1, {INPUT: (1, 1, 8, 8)})] * (WARMUP + RUNS)
    assert len(models) == 1 and isinstance(models[0], Normalised)
