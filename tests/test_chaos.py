"""Two machines that share nothing but a PostgreSQL database: two commands, two workers each, each command with its
own results folder, and one worker SIGKILLed mid-trial. Direct to the database with the weights in it
(`--artifact-store db`), and through the gRPC storage proxy with the weights in PostgreSQL too."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas.deploy import export
from nas.engine import study as study_mod
from nas.engine.objective import WORKER_KEY
from tests.conftest import ROOT, database, throwaway_study
from tests.test_parallel import check_trained_trials, trials_of
from tests.test_storage_proxy import BEATS, Proxy

pytestmark = [pytest.mark.integration, pytest.mark.postgres]
SEARCH = str(ROOT / "search.py")
TOTAL = 6


@pytest.fixture(params=["database-store", "proxy"])
def cluster(request, postgres_url):
    """(what the workers pass as --storage, as --artifact-store): the database itself, or a proxy in front of it."""
    if request.param == "database-store":
        yield postgres_url, "db"
        return
    proxy = Proxy(postgres_url).start()
    yield proxy.url, postgres_url  # behind the proxy, a worker names the database that keeps the weights
    proxy.stop()


@pytest.fixture
def study_name(postgres_url):
    yield from throwaway_study(postgres_url, "test-chaos")


def machine(storage: str, store: str, name: str, folder: Path, mnist_root: Path) -> subprocess.Popen:
    """One machine's search command: two workers, its own results folder."""
    cmd = [sys.executable, SEARCH, "--trials", str(TOTAL), "--storage", storage, "--artifact-store", store,
           "--study", name, "--jobs", "2", "--threads", "1", "--train-subset", "500", "--max-params", "3000",
           "--results-dir", str(folder)]
    return subprocess.Popen(cmd, cwd=folder.parent, env={**os.environ, **BEATS, "NAS_DATA_DIR": str(mnist_root)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def workers_of(command: subprocess.Popen) -> set[int]:
    """The pids of a command's worker processes (spawned children; not multiprocessing's resource tracker)."""
    children = Path(f"/proc/{command.pid}/task/{command.pid}/children").read_text().split()
    return {int(pid) for pid in children
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()}


def kill_a_worker_in_training(postgres_url: str, name: str, command: subprocess.Popen) -> int:
    """SIGKILLs one of `command`'s workers while it trains a trial, once some trial has finished; that trial's
    number."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and command.poll() is None:
        time.sleep(0.05)
        try:
            trials = trials_of(postgres_url, name)
            pids = workers_of(command)
        except (KeyError, FileNotFoundError):  # no study yet, or a process ended as it was read
            continue
        if not any(t.state == TrialState.COMPLETE for t in trials):
            continue
        for t in trials:
            pid = int(t.user_attrs.get(WORKER_KEY, ":0").rsplit(":", 1)[1])
            if t.state == TrialState.RUNNING and pid in pids:
                os.kill(pid, signal.SIGSTOP)  # frozen, then killed only if that trial is still its own and running
                now = {u.number: u for u in trials_of(postgres_url, name)}[t.number]
                if now.state == TrialState.RUNNING and now.user_attrs.get(WORKER_KEY) == t.user_attrs[WORKER_KEY]:
                    os.kill(pid, signal.SIGKILL)
                    return t.number
                os.kill(pid, signal.SIGCONT)
    raise AssertionError(f"never saw a worker of the command in training (exit code {command.poll()})")


def run(storage: str, store: str, name: str, folder: Path, mnist_root: Path) -> subprocess.CompletedProcess:
    command = machine(storage, store, name, folder, mnist_root)
    out = command.communicate(timeout=300)[0]
    return subprocess.CompletedProcess(command.args, command.returncode, out)


def test_two_machines_sharing_only_the_database_survive_a_killed_worker(cluster, postgres_url, study_name,
                                                                        mnist_root, tmp_path):
    storage, store = cluster
    folders = {m: tmp_path / m / "results" for m in ("a", "b")}
    for folder in folders.values():
        folder.parent.mkdir()
    a = machine(storage, store, study_name, folders["a"], mnist_root)
    b = machine(storage, store, study_name, folders["b"], mnist_root)
    try:
        victim = kill_a_worker_in_training(postgres_url, study_name, a)
        out_a = a.communicate(timeout=300)[0]
        out_b = b.communicate(timeout=300)[0]
    finally:
        for command in (a, b):
            if command.poll() is None:
                command.kill()
    # the killed worker's command stops as documented (docs/cli.md, exit codes): 3, naming the killed worker
    assert a.returncode == 3, out_a
    assert "killed by SIGKILL" in out_a, out_a
    assert b.returncode == 0, out_b

    trials = {t.number: t for t in trials_of(postgres_url, study_name)}
    assert not [n for n, t in trials.items() if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert sum(study_mod.is_trained(t) for t in trials.values()) == TOTAL
    killed = trials[victim]
    assert killed.state == TrialState.FAIL and "fail_reason" not in killed.user_attrs
    retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == victim]
    assert len(retries) == 1 and study_mod.is_trained(retries[0])  # the killed candidate, trained again
    assert retries[0].user_attrs["spec"] == killed.user_attrs["spec"]
    check_trained_trials(trials.values())

    for m in ("a", "b"):  # a rerun of either machine's command finds the total reached and exits 0
        rerun = run(storage, store, study_name, folders[m], mnist_root)
        assert rerun.returncode == 0, rerun.stdout
    best = study_mod.best_trial(optuna.load_study(study_name=study_name, storage=database(postgres_url)))
    for m, folder in folders.items():  # either machine exports the best network, wherever its trial ran
        out = tmp_path / m / "best.safetensors"
        export_cmd = [sys.executable, SEARCH, "export", "--study", study_name, "--storage", storage,
                      "--results-dir", str(folder), "--out", str(out)]
        if store != "db":  # behind the proxy, the machine names the weights' database as its search did
            export_cmd += ["--artifact-store", store]
        other = tmp_path / ("b" if m == "a" else "a")
        other.rename(other.with_name("away"))  # the other machine's disk is out of reach
        try:
            done = subprocess.run(export_cmd, cwd=tmp_path / m, env={**os.environ, "NAS_DATA_DIR": str(mnist_root)},
                                  capture_output=True, text=True, timeout=120)
        finally:
            other.with_name("away").rename(other)
        assert done.returncode == 0, done.stdout + done.stderr
        assert export.read_spec(out)[0].to_json() == best.user_attrs["spec"]
        assert export.load(out) is not None
