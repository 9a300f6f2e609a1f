"""Device ceilings (--max-mflops, --max-peak-kb, --max-latency-ms): checked on the spec before training, drawn under
by the width search, refused at the start when no network of the space meets them."""
import optuna
import pytest
from optuna.trial import TrialState

from nas.engine import ceilings as ceilings_mod
from nas.deploy import export
from nas.space.budget import count_flops, count_params, peak_activation_bytes
from nas.cli import main
from nas.engine.ceilings import Ceilings
from nas.config import SearchConfig
from nas.data import DataInfo
from nas.engine.objective import Objective
from nas.space.references import by_name
from nas.space.space import SearchSpace
from nas.space.space_file import load_space
from nas.space import tflite_graph, tflm_budget
from nas.engine.study import REJECTED, REJECTED_ARENA, REJECTED_FLASH, REJECTED_FLOPS, REJECTED_LATENCY, REJECTED_MEMORY, REJECTED_TFLM, is_trained, trained_count
from nas.engine.workers import Stopper

optuna.logging.set_verbosity(optuna.logging.WARNING)

# (settings, the `rejected` reason, the user attr and its ceiling in the attr's units): each binds for the default
# space at 25k on MNIST (the proposals' medians are about 2.9 MFLOPs, 74 KB at fp32, 18 KB at int8, 0.33 ms)
CEILINGS = {
    "mflops": (dict(max_mflops=2.0), REJECTED_FLOPS, "flops", 2e6),
    "peak-fp32": (dict(max_peak_kb=48.0), REJECTED_MEMORY, "peak_kb", 48.0),
    "peak-int8": (dict(max_peak_kb=12.0, int8_memory=True), REJECTED_MEMORY, "peak_kb", 12.0),
    "latency": (dict(max_latency_ms=0.2), REJECTED_LATENCY, "latency_ms", 0.2),
    "arena": (dict(max_arena_kb=18.0), REJECTED_ARENA, "arena_kb", 18.0),  # median 24 KB
}
R1 = by_name("R1").arch
LATENCY_MS_PER_MFLOP = 0.33 / 2.9  # the proposals' median latency over their median MFLOPs, measured here


def _ceilings(**settings) -> Ceilings:
    return Ceilings.of(SearchConfig(**settings), load_space())


def test_device_ceilings_admit_their_value_and_the_param_budget_stays_strict():
    kb = peak_activation_bytes(R1) / 1024
    assert _ceilings(max_peak_kb=kb).breach(R1) is None  # a ceiling of exactly the peak admits it
    over = _ceilings(max_peak_kb=kb - 1 / 1024).breach(R1)  # one byte less does not
    assert over.limit.reason == REJECTED_MEMORY and str(over).startswith(f"{kb:,.2f} KB peak at fp32 > --max-peak-kb")
    assert _ceilings(max_params=count_params(R1)).breach(R1).limit.reason == REJECTED  # params: strictly under
    assert _ceilings(max_params=count_params(R1) + 1).breach(R1) is None
    int8 = _ceilings(max_peak_kb=kb / 4, int8_memory=True)  # one byte a value: a quarter of fp32's bytes
    assert int8.breach(R1) is None and int8.figures(R1)["peak_kb"] == kb / 4


def test_the_microcontroller_ceilings_admit_their_predicted_value():
    arena, flash = tflm_budget.arena(R1).total, tflm_budget.flash_bytes(R1)
    fits = _ceilings(max_arena_kb=arena / 1024, max_flash_kb=flash / 1024)
    assert fits.breach(R1) is None
    assert fits.figures(R1)["arena_kb"] == arena / 1024 and fits.figures(R1)["flash_kb"] == flash / 1024
    over = _ceilings(max_arena_kb=(arena - 1) / 1024).breach(R1)
    assert over.limit.reason == REJECTED_ARENA and "KB TFLM arena > --max-arena-kb" in str(over)
    over = _ceilings(max_flash_kb=(flash - 1) / 1024).breach(R1)
    assert over.limit.reason == REJECTED_FLASH and "KB int8 flash > --max-flash-kb" in str(over)


def test_the_flash_ceiling_counts_the_metadata_the_searchs_own_data_gives_the_file():
    """An image folder's path and class names go into the int8 file: longer than MNIST's, which the bound without
    data assumes."""
    folder = DataInfo("folder:/" + "d" * 200, (1, 28, 28), tuple(f"a-long-class-name-{i}" for i in range(10)),
                      (0.1,), (0.3,))
    r1 = by_name("R1")  # its recipe's floats are short: the bound takes any recipe's at their longest
    embedded = tflm_budget.metadata_bytes(r1, folder)
    assert tflm_budget.spec_metadata_bytes(R1, folder) >= embedded > tflm_budget.spec_metadata_bytes(R1)
    ceilings = Ceilings.of(SearchConfig(max_flash_kb=100.0), load_space(), folder)
    assert ceilings.flash_bytes(R1) >= tflm_budget.flash_bytes(R1, embedded)


def test_under_a_microcontroller_ceiling_a_network_tflm_cannot_run_is_rejected():
    r4 = by_name("R4").arch  # GELU, which TFLM has no int8 kernel for
    assert tflite_graph.unsupported_layers(r4) > 0
    breach = _ceilings(max_arena_kb=1000.0).breach(r4)
    assert breach.limit.reason == REJECTED_TFLM and "GELU" in str(breach)
    assert _ceilings(max_flash_kb=1000.0).breach(r4).limit.reason == REJECTED_TFLM
    assert _ceilings(max_arena_kb=1000.0).breach(R1) is None
    assert _ceilings(max_peak_kb=1000.0, int8_memory=True).breach(r4) is None  # MCUNet's peak alone: no runtime named


def test_a_breach_names_its_ceiling_and_by_how_much():
    mflops = count_flops(R1) / 1e6
    breach = _ceilings(max_mflops=mflops - 0.5).breach(R1)
    assert breach.limit.reason == REJECTED_FLOPS and breach.figure == count_flops(R1)
    assert str(breach) == f"{mflops:,.2f} MFLOPs > --max-mflops {mflops - 0.5:g} (by 0.5)"
    assert [limit.label for limit in _ceilings().limits()] == ["--max-params 25,000", "the space's max_mflops 8"]


def test_latency_is_measured_only_when_the_cheaper_ceilings_pass(monkeypatch):
    measured = []
    monkeypatch.setattr(ceilings_mod, "_latency", lambda spec: measured.append(spec) or 1.0)
    assert _ceilings(max_params=10, max_latency_ms=0.5).breach(R1).limit.reason == REJECTED
    assert measured == []
    assert _ceilings(max_latency_ms=0.5).breach(R1).limit.reason == REJECTED_LATENCY and measured == [R1]


def test_warm_start_references_are_exempt_from_the_device_ceilings_only():
    ceilings = _ceilings(max_mflops=0.01, max_peak_kb=1.0)
    assert ceilings.breach(R1).limit.reason == REJECTED_FLOPS
    assert ceilings.breach(R1, devices=False) is None
    assert _ceilings(max_params=100, max_peak_kb=1.0).breach(R1, devices=False).limit.reason == REJECTED


def _proposals(ceilings: Ceilings, n: int) -> list:
    space = load_space()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(space.sample(trial, ceilings.params, fits=ceilings.fits_devices).arch)
        study.tell(trial, 0.0)
    return out


@pytest.fixture
def latency_proxy(monkeypatch):
    """Latency from FLOPs: measured latency follows the host's load (a busy host doubles it, a quiet one halves it),
    which would make these tests about the host rather than about sampling and rejection."""
    monkeypatch.setattr(ceilings_mod, "_latency", lambda spec: count_flops(spec) / 1e6 * LATENCY_MS_PER_MFLOP)


@pytest.mark.parametrize("name", CEILINGS)
def test_sampling_draws_the_widest_network_under_each_ceiling(name, latency_proxy):
    """Without the device predicate in the width search, about half of these proposals break the ceiling."""
    ceilings = _ceilings(**CEILINGS[name][0])
    archs = _proposals(ceilings, 30)
    assert sum(ceilings.breach(a) is not None for a in archs) <= 3  # the issue allows 20%


@pytest.mark.parametrize("name", CEILINGS)
def test_a_candidate_over_a_ceiling_is_rejected_untrained_and_not_counted(tmp_path, toy, name, latency_proxy):
    settings, reason, attr, ceiling = CEILINGS[name]
    space = load_space()
    # a sampler blind to the device ceilings, as an older study's or a hand-queued candidate would be
    space.sample = lambda trial, max_params, shape, classes, fits=None, **kw: SearchSpace.sample(
        space, trial, max_params, shape, classes, **kw)
    config = SearchConfig(quiet=True, device="cpu", train_subset=None, **settings)
    objective = Objective(config, space, toy, "cpu", export.artifact_store(tmp_path / "a"), tmp_path / "s")
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, callbacks=[Stopper(2, objective)], catch=(Exception,))
    over = [t for t in study.trials if t.user_attrs.get("rejected") == reason]
    assert over and trained_count(study) == 2
    for t in over:
        assert t.state == TrialState.PRUNED and not is_trained(t) and t.user_attrs[attr] > ceiling
        assert not t.intermediate_values and "train_seconds" not in t.user_attrs
    assert all(t.user_attrs[attr] <= ceiling for t in study.trials if is_trained(t))
    for t in study.trials:  # every trial carries every figure, whatever its ceilings
        assert {"flops", "peak_kb", "arena_kb", "flash_kb", "latency_ms"} <= set(t.user_attrs)


def test_unmeetable_ceilings_are_one_line_at_the_start_naming_each(tmp_path, capsys):
    code = main(["search", "--max-mflops", "0.01", "--max-peak-kb", "2", "--max-latency-ms", "0.001",
                 "--results-dir", str(tmp_path), "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    parts = err[0].removeprefix("error: ").split("; ")
    assert len(parts) == 3, parts
    for part, flag, figure in zip(parts, ("--max-mflops 0.01", "--max-peak-kb 2", "--max-latency-ms 0.001"),
                                  ("MFLOPs", "KB peak at fp32", "ms latency")):
        assert part.startswith(f"{flag} is below the smallest network the space ") and part.endswith(
            f" {figure})"), part
    assert "(15.31 KB peak at fp32)" in parts[1]  # one 4-channel conv at 28x28, with its input: (784 + 3,136) x 4 bytes
    assert not (tmp_path / "nas.db").exists()
    assert main(["search", "--max-peak-kb", "4", "--int8-memory", "--results-dir", str(tmp_path), "--trials", "1",
                 "--max-params", "100"]) == 2
    err = capsys.readouterr().err  # the smallest's 15.31 KB at fp32 is 3.83 KB at int8: only the params are too few
    assert err.count("\n") == 1 and err.startswith("error: --max-params 100 is below")
