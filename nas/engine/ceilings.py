"""The param budget and the device ceilings (FLOPs, peak activation memory, TFLM's arena and flash, latency) a
candidate must meet before it trains: each measured on its spec, cheapest first."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from nas.space import budget, tflite_graph, tflm_budget
from nas.engine import study as study_mod
from nas.data import DataInfo
from nas.space.spec import ArchSpec


@dataclass(frozen=True)
class Limit:
    """One ceiling: `measure` a spec in base units (params, FLOPs, bytes, ms), shown in the flag's units (÷ scale)."""
    reason: str  # the trial's `rejected` value when a candidate breaks it
    label: str  # how the ceiling is named, e.g. "--max-peak-kb 64"
    value: float  # in the flag's units
    scale: float  # base units per flag unit: 1 KB = 1,024 bytes, 1 MFLOP = 1e6 FLOPs
    unit: str  # the figure's unit, e.g. "KB peak at fp32"
    measure: Callable[[ArchSpec], float]
    strict: bool = False  # params: a 25,000 budget admits 24,999; a device ceiling admits a value equal to it

    def admits(self, figure: float) -> bool:
        return figure < self.value * self.scale if self.strict else figure <= self.value * self.scale

    def show(self, figure: float) -> str:
        """A figure in the flag's units: "25,001 params", "8.3 MFLOPs", "64.2 KB peak at fp32", "0.53 ms latency"."""
        value = figure / self.scale
        return f"{value:,.0f} {self.unit}" if self.scale == 1 and float(value).is_integer() else f"{value:,.2f} {self.unit}"


@dataclass(frozen=True)
class Breach:
    """A ceiling a candidate breaks, and its figure."""
    limit: Limit
    figure: float

    def __str__(self) -> str:  # e.g. "70.50 KB peak at fp32 > --max-peak-kb 64 (by 6.5)"
        over = self.figure / self.limit.scale - self.limit.value
        sign = ">=" if self.limit.strict else ">"
        return f"{self.limit.show(self.figure)} {sign} {self.limit.label}" + (f" (by {over:,.4g})" if over else "")


def _latency(spec: ArchSpec) -> float:
    # onnx and onnxruntime load at the first latency measured, not at import. A search measures one for every
    # candidate it draws, ceiling or not: figures() records latency_ms on every trial (trials.csv, the dashboard,
    # --size-metric latency-ms), so they load at its first trial. nas.deploy.latency caches the figure per spec.
    from nas.deploy.latency import latency_ms

    return latency_ms(spec)


def peak_bytes(spec: ArchSpec, int8: bool) -> int:
    """Peak activation memory of one image at batch 1: one byte a value with --int8-memory, else four (fp32)."""
    return budget.peak_activation_bytes(spec, 1 if int8 else 4)


@dataclass(frozen=True)
class Ceilings:
    """The strict param budget and the device ceilings (None: none), checked on a spec before it trains."""
    params: int
    mflops: float | None = None
    peak_kb: float | None = None
    int8: bool = False
    latency_ms: float | None = None
    arena_kb: float | None = None
    flash_kb: float | None = None
    mflops_label: str = "--max-mflops"  # "the space's max_mflops" when the space sets it
    data: DataInfo | None = None  # whose JSON the int8 file carries, for its flash; None: a bound for MNIST's

    @classmethod
    def of(cls, config, space, data: DataInfo | None = None) -> Ceilings:
        """The search's ceilings: --max-mflops, else the space's max_mflops; the others from their flags."""
        mflops = config.max_mflops if config.max_mflops is not None else space.max_mflops
        return cls(config.max_params, mflops, config.max_peak_kb, config.int8_memory, config.max_latency_ms,
                   config.max_arena_kb, config.max_flash_kb,
                   "--max-mflops" if config.max_mflops is not None else "the space's max_mflops", data)

    def flash_bytes(self, spec: ArchSpec) -> int:
        """The predicted int8 .tflite size, with the metadata this data gives it."""
        return tflm_budget.flash_bytes(spec, tflm_budget.spec_metadata_bytes(spec, self.data))

    @property
    def precision(self) -> str:
        return "int8" if self.int8 else "fp32"

    def limits(self, devices: bool = True) -> list[Limit]:
        """The ceilings set, cheapest measure first (latency last: it runs the network); `devices=False`: params
        only, for warm-start references, which are exempt from the device ceilings."""
        out = [Limit(study_mod.REJECTED, f"--max-params {self.params:,}", self.params, 1, "params", budget.count_params,
                     strict=True)]
        if not devices:
            return out
        if self.mflops is not None:
            out.append(Limit(study_mod.REJECTED_FLOPS, f"{self.mflops_label} {self.mflops:g}", self.mflops, 1e6,
                             "MFLOPs", budget.count_flops))
        if self.peak_kb is not None:
            out.append(Limit(study_mod.REJECTED_MEMORY, f"--max-peak-kb {self.peak_kb:g}", self.peak_kb, 1024,
                             f"KB peak at {self.precision}", lambda spec: peak_bytes(spec, self.int8)))
        if self.arena_kb is not None or self.flash_kb is not None:  # a network TFLM cannot run fits no device
            out.append(Limit(study_mod.REJECTED_TFLM, "0 (TFLM cannot run them)", 0, 1,
                             f"layer(s) with no TFLM int8 kernel ({', '.join(tflite_graph.UNSUPPORTED)})",
                             tflite_graph.unsupported_layers))
        if self.arena_kb is not None:
            out.append(Limit(study_mod.REJECTED_ARENA, f"--max-arena-kb {self.arena_kb:g}", self.arena_kb, 1024,
                             "KB TFLM arena", lambda spec: tflm_budget.arena(spec).total))
        if self.flash_kb is not None:
            out.append(Limit(study_mod.REJECTED_FLASH, f"--max-flash-kb {self.flash_kb:g}", self.flash_kb, 1024,
                             "KB int8 flash", self.flash_bytes))
        if self.latency_ms is not None:
            out.append(Limit(study_mod.REJECTED_LATENCY, f"--max-latency-ms {self.latency_ms:g}", self.latency_ms, 1,
                             "ms latency", _latency))
        return out

    def breach(self, spec: ArchSpec, devices: bool = True) -> Breach | None:
        """The first ceiling `spec` breaks, measuring only until one does; None if it fits them all."""
        for limit in self.limits(devices):
            figure = limit.measure(spec)
            if not limit.admits(figure):
                return Breach(limit, figure)
        return None

    def fits_devices(self, spec: ArchSpec) -> bool:
        """Within every device ceiling (params aside: the width search has its own, tighter, param target)."""
        return all(limit.admits(limit.measure(spec)) for limit in self.limits()[1:])

    def figures(self, spec: ArchSpec) -> dict[str, float]:
        """What every trial records, ceiling or not: FLOPs, peak activation KB at the study's precision, TFLM's
        arena and the int8 flash (KB, predicted), latency."""
        return {"flops": budget.count_flops(spec), "peak_kb": peak_bytes(spec, self.int8) / 1024,
                "arena_kb": tflm_budget.arena(spec).total / 1024, "flash_kb": self.flash_bytes(spec) / 1024,
                "latency_ms": _latency(spec)}
