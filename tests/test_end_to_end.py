"""End to end: `python search.py` in a subprocess on real MNIST subsets, as a user runs it."""
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest
import torch
from optuna.trial import TrialState
from safetensors.torch import load_file

from nas.deploy import export
from nas.engine.study import is_trained, trained_count
from nas.engine.train import evaluate
from tests.conftest import ROOT

pytestmark = pytest.mark.integration
optuna.logging.set_verbosity(optuna.logging.WARNING)


def search_py(*args, env_extra=None, timeout=600):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, str(ROOT / "search.py"), *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=ROOT)


def load(results, name="t"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{results}/nas.db")


SMALL = ("--train-subset", 1500, "--max-params", 4000, "--study", "t", "--seed", 3, "--threads", 1, "--jobs", 1)


@pytest.fixture(scope="module")
def small_search(tmp_path_factory, mnist_root):
    """Three trained trials under a 4,000-param budget; --warm-start queues R1, R2 and R4 (all over it) first."""
    results = tmp_path_factory.mktemp("results")
    proc = search_py("--trials", 3, "--warm-start", *SMALL, "--results-dir", results, "--data-dir", mnist_root)
    assert proc.returncode == 0, proc.stderr
    return results, proc


def test_search_writes_every_result_file(small_search):
    results, proc = small_search
    for name in ("trials.csv", "frontier.csv", "frontier.html", "best.safetensors", "best.json"):
        assert (results / "t" / name).is_file(), name
    assert (results / "nas.db").is_file()
    assert "optuna-dashboard sqlite:///" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_over_budget_candidates_were_never_trained(small_search):
    results, _ = small_search
    trials = pd.read_csv(results / "t" / "trials.csv")
    rejected = trials[trials["rejected"] == "over_budget"]
    assert sorted(rejected["reference"]) == ["R1", "R2", "R4"]
    assert (rejected["params"] >= 4000).all()
    assert rejected["train_seconds"].isna().all() and rejected["val_acc"].isna().all()
    assert (trials[trials["state"] == "COMPLETE"]["params"] < 4000).all()
    assert trained_count(load(results)) == 3


def test_exported_weights_reload_to_the_test_accuracy_the_report_gives(small_search, mnist):
    """Trials are scored on validation alone; the report scores the frontier (the best among it) on the test set."""
    results, proc = small_search
    best = load(results).best_trial
    model = export.load(results / "t" / "best.safetensors").to(memory_format=torch.channels_last)
    x = (mnist.x_test.float() / 255.0).contiguous(memory_format=torch.channels_last)  # it normalises as in training
    frontier = pd.read_csv(results / "t" / "frontier.csv").set_index("number")
    assert evaluate(model, x, mnist.y_test) == pytest.approx(frontier.loc[best.number, "test_acc"], abs=1e-4)
    assert frontier["test_acc"].notna().all() and "test_acc" not in pd.read_csv(results / "t" / "trials.csv")
    assert not any("test_acc" in t.user_attrs for t in load(results).trials)
    trial_lines = [line for line in proc.stdout.splitlines() if line.startswith("trial ") and " val " in line]
    assert trial_lines and not any("test" in line for line in trial_lines)
    assert f"val {best.value:.2%}, test {frontier.loc[best.number, 'test_acc']:.2%} ->" in proc.stdout


def test_report_regenerates_from_the_storage_alone(small_search):
    results, _ = small_search
    before = {name: (results / "t" / name).read_bytes() for name in ("trials.csv", "frontier.csv", "best.safetensors")}
    for name in ("trials.csv", "frontier.csv", "frontier.html", "best.safetensors"):
        (results / "t" / name).unlink()
    proc = search_py("report", "--study", "t", "--results-dir", results)
    assert proc.returncode == 0, proc.stderr
    assert (results / "t" / "frontier.html").is_file()
    assert {name: (results / "t" / name).read_bytes() for name in before} == before


def test_export_any_trial(small_search, tmp_path):
    results, _ = small_search
    study = load(results)
    other = next(t for t in study.trials if t.state == TrialState.COMPLETE and t.number != study.best_trial.number)
    out = tmp_path / "x.safetensors"
    proc = search_py("export", "--study", "t", "--trial", other.number, "--results-dir", results, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert f"trial {other.number} " in proc.stdout
    assert export.read_spec(out)[0].to_json() == other.user_attrs["spec"]
    sidecar = json.loads((tmp_path / "x.json").read_text())
    assert sidecar.pop("data")["source"] == "mnist"
    assert sidecar == json.loads(export.read_spec(out)[0].to_json())
    best = load_file(results / "t" / "best.safetensors")
    mine = load_file(out)
    assert mine.keys() == export.load(out).state_dict().keys()
    assert mine.keys() != best.keys() or any(not torch.equal(mine[k], best[k]) for k in mine)


def test_rerun_resumes_the_study(small_search, mnist_root):
    results, _ = small_search
    proc = search_py("--trials", 4, *SMALL, "--results-dir", results, "--data-dir", mnist_root)
    assert proc.returncode == 0, proc.stderr
    assert "3 trained trial(s) so far" in proc.stdout
    assert trained_count(load(results)) == 4


TINY_SPACE = """
name = "tiny"
[arch]
stem_convs = 1
stages = 1
convs_per_stage = 1
pools = 2
pool_placement = "late"
pool = "max"
block = "conv"
kernel = 3
bn = false
activation = "relu"
dropout = 0.0
residual = "none"
head = "gap"
head_hidden = 16
head_dropout = 0.0
width_growth = 1.0
budget_fill = { low = 0.5, high = 1.0 }
min_width = 4
max_width = 8
[recipe]
optimizer = "adam"
sgd_lr = 0.1
adam_lr = { low = 0.001, high = 0.01, log = true }
momentum = 0.9
schedule = "constant"
warmup = 0.25
batch_size = 50
weight_decay = 0.0
cycle_momentum = true
label_smoothing = 0.0
grad_clip = 0.0
ema = 0.0
whiten = "off"
dirac = false
bn_momentum = 0.1
bn_bias_lr = 1.0
bn_freeze_scale = false
muon_lr = 0.0
lookahead = 0
lr_batch = 0
"""


def _start(tmp_path, mnist_root, trials, env=None, jobs=1):
    """In a session of its own, so that a test can signal its whole process group as a terminal's Ctrl-C does."""
    space = tmp_path / "tiny.toml"
    space.write_text(TINY_SPACE)
    args = [sys.executable, "search.py", "--space", space, "--max-params", "2000", "--trials", trials,
            "--train-subset", "500", "--threads", "1", "--jobs", jobs, "--results-dir", tmp_path / "r",
            "--data-dir", mnist_root]
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.Popen([str(a) for a in args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def _wait_for_first_trial(proc, tmp_path) -> None:
    """Until the first trial line is printed and that trial is stored as COMPLETE."""
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "trial" in line and " val " in line:  # "trial 0 ..." or, from a --jobs worker, "[w0] trial 0 ..."
            while time.monotonic() < deadline:
                with sqlite3.connect(tmp_path / "r" / "nas.db", timeout=30) as db:
                    if db.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0]:
                        return
                time.sleep(0.05)
    proc.kill()
    pytest.fail("no trial finished: " + "".join(lines) + proc.stderr.read())


def _tiny_trials(tmp_path):
    return load(tmp_path / "r", "tiny-2000-sub500").get_trials()


def _workers(pid: int) -> list[int]:
    """The --jobs worker processes of a search: its children started by multiprocessing's spawn."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split() if b"spawn_main" in _cmdline(int(p))]


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:  # gone already
        return b""


@pytest.mark.parametrize("jobs, signum, to", [
    (1, signal.SIGINT, "pid"), (1, signal.SIGTERM, "pid"), (2, signal.SIGINT, "pid"), (2, signal.SIGTERM, "pid"),
    (2, signal.SIGINT, "group"),  # a terminal's Ctrl-C: every process of the group at once, counted once
], ids=["jobs1-SIGINT", "jobs1-SIGTERM", "jobs2-SIGINT", "jobs2-SIGTERM", "jobs2-ctrl-c-in-a-terminal"])
def test_a_signal_stops_every_worker_marks_the_running_trials_writes_reports_and_exits_128_plus_it(
        tmp_path, mnist_root, jobs, signum, to):
    proc = _start(tmp_path, mnist_root, trials=50, jobs=jobs)
    try:
        _wait_for_first_trial(proc, tmp_path)
        spawned = _workers(proc.pid)
        assert len(spawned) == (jobs if jobs > 1 else 0)
        (os.killpg if to == "group" else os.kill)(proc.pid, signum)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_cmdline(p) for p in spawned):
            time.sleep(0.2)
        assert not [p for p in spawned if _cmdline(p)], "workers still running 10 s after the signal"
        out, err = proc.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):  # whatever is left of the search, if a check failed
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err and "Warning" not in err and f"interrupted by {signum.name}" in err
    results = tmp_path / "r" / "tiny-2000-sub500"
    for name in ("trials.csv", "frontier.csv", "frontier.html", "best.safetensors", "best.json"):
        assert (results / name).is_file(), name
    trials = _tiny_trials(tmp_path)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert not [t for t in trials if t.state == TrialState.FAIL and "fail_reason" in t.user_attrs]
    # each trial stopped after its candidate was drawn is re-queued; a re-queued one that the other worker took up
    # before its stop came is stopped and re-queued again, naming both in its retry history, or, if that worker's
    # trial ended first, trained to its end
    stopped = {t.number for t in trials if t.state == TrialState.FAIL and t.params}
    retried = {n for t in trials if t.state == TrialState.WAITING or is_trained(t)
               for n in t.system_attrs.get("retry_history", ())}
    assert stopped <= retried
    assert not list(results.glob(".*.tmp"))
    export.load(results / "best.safetensors")  # the exported best model is whole


def test_sigkill_then_the_same_command_resumes(tmp_path, mnist_root):
    env = {"NAS_HEARTBEAT_SECONDS": "1", "NAS_GRACE_SECONDS": "2"}
    proc = _start(tmp_path, mnist_root, trials=50, env=env)
    _wait_for_first_trial(proc, tmp_path)
    proc.kill()
    proc.communicate(timeout=30)
    before = {t.number: t for t in _tiny_trials(tmp_path) if t.state == TrialState.COMPLETE}
    assert before
    time.sleep(2.5)  # the killed trial's heartbeat goes stale
    again = _start(tmp_path, mnist_root, trials=len(before) + 1, env=env)
    out, err = again.communicate(timeout=180)
    assert again.returncode == 0, err
    after = _tiny_trials(tmp_path)
    assert not [t for t in after if t.state == TrialState.RUNNING]
    for number, t in before.items():
        assert after[number].state == TrialState.COMPLETE and after[number].value == t.value
    assert sum(is_trained(t) for t in after) >= len(before) + 1
