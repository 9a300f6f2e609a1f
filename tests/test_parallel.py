"""Many workers on one study over a real PostgreSQL server (NAS_TEST_POSTGRES_URL; `.ci/run` starts one).

Each test runs `search.py` in subprocesses on a small real-MNIST subset, under a fresh study name it deletes after.
"""
import os
import shlex
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from nas.engine import optuna_internals as internals
from nas.engine import study as study_mod
from tests.conftest import ROOT, database, throwaway_study

pytestmark = [pytest.mark.postgres, pytest.mark.integration]
optuna.logging.set_verbosity(optuna.logging.WARNING)

SEARCH = str(ROOT / "search.py")
SHOWN = ("params", "flops", "val_acc", "train_seconds", "spec", "candidate_id", "seed", "weights_artifact")


@pytest.fixture(scope="module")
def postgres_ctl(postgres_url) -> list[str]:
    """The command that controls the test server: `pg_ctl -D DATA ...` (and `runuser -u postgres --` as root)."""
    ctl = os.environ.get("NAS_TEST_POSTGRES_CTL")
    if ctl:
        return shlex.split(ctl)
    if os.environ.get("CI") == "true":
        pytest.fail("CI needs NAS_TEST_POSTGRES_CTL to stop and start the test server (.ci/run sets it)")
    pytest.skip("no control of the PostgreSQL server (set NAS_TEST_POSTGRES_CTL='pg_ctl -D DATA -l LOG -w')")


@pytest.fixture
def study_name(postgres_url):
    yield from throwaway_study(postgres_url, "test-parallel")


def command(url, name, tmp_path, trials, images=500):
    # one worker per command (--jobs 1), so two commands are two workers and SIGKILL hits the worker itself
    return [sys.executable, SEARCH, "--trials", str(trials), "--storage", url, "--study", name, "--jobs", "1",
            "--train-subset", str(images), "--max-params", "3000", "--threads", "1",
            "--results-dir", str(tmp_path / "results")]


def environment(mnist_root):
    # short heartbeats so a killed worker's trial is found stale in seconds, not a minute
    return {**os.environ, "NAS_DATA_DIR": str(mnist_root), "NAS_HEARTBEAT_SECONDS": "1", "NAS_GRACE_SECONDS": "3"}


def trials_of(url, name):
    return optuna.load_study(study_name=name, storage=database(url)).get_trials()


def check_trained_trials(trials):
    for t in trials:
        if not study_mod.is_trained(t):
            continue
        keys = SHOWN if t.state == TrialState.COMPLETE else ("params", "flops", "spec", "candidate_id", "seed")
        missing = [k for k in keys if k not in t.user_attrs]
        assert not missing, f"trial {t.number} ({t.state.name}) lacks user attrs {missing}"
        assert t.params, f"trial {t.number} has no params"
        if t.state == TrialState.COMPLETE:
            assert t.value == t.user_attrs["val_acc"] and t.intermediate_values


def kill_in_training(url, name, worker) -> tuple[int, str]:
    """SIGKILLs the `worker` process while it trains a trial, once another trial has finished: that trial's number,
    and what the worker printed."""
    victim = None
    try:
        deadline = time.monotonic() + 120
        while victim is None and time.monotonic() < deadline and worker.poll() is None:
            time.sleep(0.05)
            try:
                trials = trials_of(url, name)
            except KeyError:  # the study is not created yet
                continue
            done = [t for t in trials if t.state == TrialState.COMPLETE]
            # a trial past the budget filter (it has its training seed) and training, once another one has finished
            running = [t for t in trials if t.state == TrialState.RUNNING and "seed" in t.user_attrs]
            if done and running:
                os.kill(worker.pid, signal.SIGKILL)
                victim = running[0].number
    finally:
        if worker.poll() is None:
            worker.kill()
        out = worker.communicate(timeout=30)[0]
    assert victim is not None, f"never saw a trial in training after a finished one:\n{out}"
    return victim, out


def test_two_workers_share_one_postgres_study(postgres_url, study_name, mnist_root, tmp_path):
    """Two processes (as on two machines) run the same command: the total is met, nothing lost or duplicated."""
    target = 3
    cmd = command(postgres_url, study_name, tmp_path, target)
    env = environment(mnist_root)
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out

    trials = trials_of(postgres_url, study_name)
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(len(trials))), "trial numbers are duplicated or missing"
    assert len({internals.trial_id(t) for t in trials}) == len(trials)
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    trained = [t for t in trials if study_mod.is_trained(t)]
    # a worker stops when the trained and running trials reach the total; of two trials started at the same moment
    # past it, the later one is surplus, never trained
    assert len(trained) == target, [(t.number, t.state.name) for t in trials]
    check_trained_trials(trials)
    candidates = [t.user_attrs["candidate_id"] for t in trained]
    assert len(set(candidates)) == len(candidates), "two workers trained the same candidate"
    for out in outputs:
        assert "dashboard: optuna-dashboard postgresql+psycopg://" in out


def test_a_worker_killed_mid_trial_is_resumed_without_losing_or_sticking(postgres_url, study_name, mnist_root,
                                                                         tmp_path):
    """SIGKILL during training, then the same command again: finished trials intact, none RUNNING, total reached."""
    target = 2
    cmd = command(postgres_url, study_name, tmp_path, target, images=3000)  # trials of about 2 s: time to see one
    env = environment(mnist_root)
    worker = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    victim, out = kill_in_training(postgres_url, study_name, worker)
    assert worker.returncode == -signal.SIGKILL, out

    before = {t.number: t for t in trials_of(postgres_url, study_name)}
    assert before[victim].state == TrialState.RUNNING  # stuck until its heartbeat goes stale
    finished = {n: t for n, t in before.items() if t.state.is_finished()}
    time.sleep(3.5)  # the grace period: the killed worker's heartbeat is now stale

    rerun = subprocess.run(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=180)
    assert rerun.returncode == 0, rerun.stdout

    after = {t.number: t for t in trials_of(postgres_url, study_name)}
    for n, t in finished.items():  # finished trials are untouched
        a = after[n]
        assert (a.state, a.value, a.params, a.user_attrs, a.intermediate_values) == \
               (t.state, t.value, t.params, t.user_attrs, t.intermediate_values), f"trial {n} changed"
    assert not [t.number for t in after.values() if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    killed = after[victim]
    assert killed.state == TrialState.FAIL and "fail_reason" not in killed.user_attrs
    assert not study_mod.is_trained(killed)
    # the killed trial is retried once, as the same candidate with the same seed, and that retry counts
    retries = [t for t in after.values() if t.system_attrs.get("failed_trial") == victim]
    assert len(retries) == 1, [(t.number, t.state.name, t.system_attrs) for t in after.values()]
    retry = retries[0]
    assert study_mod.is_trained(retry)
    assert retry.params == killed.params
    for key in ("spec", "candidate_id", "seed"):
        assert retry.user_attrs[key] == killed.user_attrs[key], key
    trained = [t for t in after.values() if study_mod.is_trained(t)]
    assert len(trained) == target, [(t.number, t.state.name) for t in after.values()]
    check_trained_trials(after.values())


OUTAGE_SECONDS = 15


def wait_for_trained(url, name, worker, count, deadline=120) -> dict:
    """Polls the study until it holds `count` trained trials; their snapshot."""
    end = time.monotonic() + deadline
    while time.monotonic() < end and worker.poll() is None:
        try:
            trained = {t.number: t for t in trials_of(url, name) if study_mod.is_trained(t)}
        except KeyError:  # the study is not created yet
            trained = {}
        if len(trained) >= count:
            return trained
        time.sleep(0.2)
    out = worker.communicate(timeout=30)[0] if worker.poll() is not None else ""
    raise AssertionError(f"the search never reached {count} trained trial(s) (exit code {worker.poll()}):\n{out}")


def outage(ctl, worker, seconds=OUTAGE_SECONDS) -> None:
    """Stops the PostgreSQL server `ctl` controls for `seconds`, during which `worker` must go on, then starts it
    again (whatever happened)."""
    subprocess.run(ctl + ["stop", "-m", "fast"], check=True, capture_output=True, timeout=60)
    try:
        time.sleep(seconds)
        assert worker.poll() is None, "the search ended while the server was down:\n" + worker.communicate()[0][-3000:]
    finally:
        subprocess.run(ctl + ["start"], check=True, capture_output=True, timeout=60)


@pytest.mark.stops_postgres
def test_a_postgres_outage_mid_search_is_waited_out(postgres_url, postgres_ctl, study_name, mnist_root, tmp_path):
    """The server stopped for 15 s mid-search, later restarted at once: the worker waits, goes on, and finishes."""
    target = 5
    worker = subprocess.Popen(command(postgres_url, study_name, tmp_path, target), cwd=tmp_path,
                              env=environment(mnist_root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        snapshots = [wait_for_trained(postgres_url, study_name, worker, 1)]
        outage(postgres_ctl, worker)
        snapshots.append(wait_for_trained(postgres_url, study_name, worker, len(snapshots[0]) + 1))
        subprocess.run(postgres_ctl + ["restart", "-m", "fast"], check=True, capture_output=True, timeout=60)
        out = worker.communicate(timeout=180)[0]
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate(timeout=30)
    assert worker.returncode == 0, out
    assert "storage unreachable" in out and "storage reachable again" in out, out

    after = {t.number: t for t in trials_of(postgres_url, study_name)}
    for n, t in [item for snapshot in snapshots for item in snapshot.items()]:  # no finished trial lost or changed
        a = after[n]
        assert (a.state, a.value, a.params, a.user_attrs, a.intermediate_values) == \
               (t.state, t.value, t.params, t.user_attrs, t.intermediate_values), f"trial {n} changed"
    assert not [t.number for t in after.values() if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert sorted(after) == list(range(len(after))), "trial numbers are duplicated or missing"
    trained = [t for t in after.values() if study_mod.is_trained(t)]
    assert len(trained) == target, [(t.number, t.state.name) for t in after.values()]
    check_trained_trials(after.values())
