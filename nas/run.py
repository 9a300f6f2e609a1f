"""One search, the top-level story: open the study, run the workers, then report, export and summarise."""
from __future__ import annotations

import dataclasses
import signal
import sys
import time

import optuna

from nas import logs
from nas.engine import artifact_store, progress, workers
from nas.results import summary
from nas.engine import study as study_mod
from nas.engine.ceilings import Ceilings
from nas.config import SearchConfig
from nas.engine.identity import study_identity
from nas.engine.device import default_jobs, resolve_device
from nas.errors import SearchError, SearchFailed
from nas.fileio import writable_dir
from nas.engine.interrupts import CTRL_C
from nas.data import MIN_IMAGE_SIZE, read_data, split_fingerprint
from nas.space.layout import MNIST_CLASSES, MNIST_SHAPE
from nas.space.space import Range, SearchSpace
from nas.space.space_file import load_space
from nas.engine.storage import fail_stale_trials, open_storage, redact, requeue_interrupted


def run(config: SearchConfig) -> dict:
    """The whole `search.py` job, with SIGINT and SIGTERM handled by CTRL_C for all of it."""
    CTRL_C.install()
    try:
        return _run(config)
    finally:
        CTRL_C.uninstall()


def _run(config: SearchConfig) -> dict:
    """A first signal, or a failed worker, writes the reports from the finished trials, then raises (Interrupted or
    SearchFailed). A second signal stops at once; result files are written atomically, so none is left half-written."""
    started = time.perf_counter()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logs.configure(config.quiet)
    space = load_space(config.space)
    ceilings = Ceilings.of(config, space)
    check_ceilings(space, ceilings, *least_data(config))
    check_sizes(space, config)
    device = resolve_device(config.device)  # an unavailable --device fails here, before any study is made
    config = dataclasses.replace(config, jobs=config.jobs or default_jobs(device))
    study = open_study(config, space)
    fail_stale_trials(study)  # a killed worker's trial: failed and re-queued, even if the total is reached
    again = requeue_interrupted(study)  # those a second signal stopped before their worker re-queued them
    if again:
        logs.line(f"re-queued trial(s) {', '.join(map(str, again))}, stopped by a signal last time")
    if config.warm_start:
        study_mod.enqueue_references(study)
    logs.line(f"study {study.study_name!r} in {redact(config.storage_url)}: {study_mod.trained_count(study)} trained "
              f"trial(s) so far, target {config.trials}; budget < {config.max_params:,} params; "
              f"{device_ceilings(ceilings)}{config.jobs} worker(s) on {device}")
    splits = None
    try:
        with progress.shown(study, config.trials, config.quiet):
            with CTRL_C.stoppable():  # nothing is written yet: a signal while the data loads stops at once
                splits = read_data(config)  # read once: checked here, trained on by --jobs 1, scored by the reports
            study_mod.check_data(study, split_fingerprint(splits))  # changed data: one line, before any worker
            cannot_fit = workers.run_all(config, splits)
        CTRL_C.check()  # a signal after the last trial ended
    except KeyboardInterrupt:
        if CTRL_C.presses > 1:
            raise
        name = signal.Signals(CTRL_C.signum).name
        print(f"\ninterrupted by {name}: writing the reports from the finished trials ({name} again to stop at once)",
              file=sys.stderr, flush=True)
        summary.finish(config, study, time.perf_counter() - started, splits)
        raise
    except SearchFailed:
        summary.finish(config, study, time.perf_counter() - started, splits)
        raise
    result = summary.finish(config, study, time.perf_counter() - started, splits)
    CTRL_C.check()  # a signal while the reports were written
    if cannot_fit:
        raise SearchError(f"{workers.MAX_CONSECUTIVE_REJECTIONS} candidates in a row were over the budget of "
                          f"{config.max_params:,} or a device ceiling: the space {space.path} cannot fit it; raise "
                          f"--max-params (or the ceiling) or narrow the widths/depth in the space file")
    if result["best"] is None:
        reasons = [t.user_attrs["fail_reason"] for t in study.get_trials(deepcopy=False) if "fail_reason" in t.user_attrs]
        raise SearchFailed(f"no trial completed in study {study.study_name!r}"
                           + (f"; {len(reasons)} failed, the last: {reasons[-1]}" if reasons else ""))
    return result


def check_sizes(space: SearchSpace, config: SearchConfig) -> None:
    """Pareto mode: each named size must lie in the range the space draws (its budget_fill x --max-params)."""
    if config.sizes and not config.mode.pareto:
        raise SearchError("--sizes goes with --objective pareto")
    if config.sizes and max(config.sizes) > config.max_params:
        raise SearchError(f"--sizes {max(config.sizes)}: above --max-params {config.max_params}")
    if not config.mode.pareto:
        return
    fill = space.arch["budget_fill"]
    low = fill.low if isinstance(fill, Range) else min(fill) if isinstance(fill, list) else fill
    under = [share for share in config.size_shares if share <= low]
    if under:
        raise SearchError(f"--sizes {round(under[0] * config.max_params)}: at or under the smallest size the space "
                          f"{space.path} draws, budget_fill {low:g} x --max-params = {low * config.max_params:,.0f}")


def device_ceilings(ceilings: Ceilings) -> str:
    """The device ceilings for the opening line, e.g. "ceilings: --max-mflops 4, --max-peak-kb 64; "."""
    labels = [limit.label for limit in ceilings.limits()[1:]]
    return f"ceilings: {', '.join(labels)}; " if labels else ""


def least_data(config: SearchConfig) -> tuple[tuple[int, int, int], int]:
    """The smallest (C, H, W) and class count the data can have, known before it is read: MNIST's and Fashion-MNIST's
    own size, else one channel at the smallest image size and two classes."""
    if config.dataset in ("mnist", "fashion-mnist") and config.image_size is None:
        return MNIST_SHAPE, MNIST_CLASSES
    return (1, MIN_IMAGE_SIZE, MIN_IMAGE_SIZE), 2


def check_ceilings(space: SearchSpace, ceilings: Ceilings, input_shape: tuple[int, int, int], classes: int) -> None:
    """A budget or device ceiling below the smallest network the space builds for such data is refused before any
    study is made, in one line naming each such ceiling and the smallest's figure. Run before the data is read, with
    `least_data`: a ceiling that only the data's own networks cannot meet is caught by the rejections in a row
    (workers.MAX_CONSECUTIVE_REJECTIONS)."""
    unmet = []
    for limit in ceilings.limits():
        smallest = space.smallest(limit.measure, input_shape, classes)
        if not limit.admits(smallest):
            unmet.append(f"{limit.label} is below the smallest network the space {space.path} can build "
                         f"({limit.show(smallest)})")
    if unmet:
        raise SearchError("; ".join(unmet))


def open_study(config: SearchConfig, space: SearchSpace) -> optuna.Study:
    """Checks the result folders, then creates the study or resumes it if it was made with the same settings."""
    writable_dir(config.results_dir, "--results-dir")
    artifact_store.writer(config, config.study_name(space))  # a store that cannot take weights fails now
    sampler = study_mod.make_sampler(config.sampler, config.seed, config.mode, config.size_shares)
    return study_mod.create_or_resume(open_storage(config.storage_url), config.study_name(space),
                                      study_identity(config, space), sampler)
