"""Faults lose nothing finished: Ctrl-C, SIGKILL and resume, NaN/inf/out-of-memory trials, interrupted writes."""
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from nas import export, fileio, report, search, study as study_mod
from nas.search import Objective, SearchConfig, Stopper
from nas.space import load_space
from tests.conftest import ROOT, synthetic_splits

TINY_SPACE = """
name = "tiny"
[arch]
stem_convs = 1
stages = 1
convs_per_stage = 1
pools = 2
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
label_smoothing = 0.0
grad_clip = 0.0
ema = 0.0
"""


def _start(tmp_path, mnist_root, trials, env=None):
    space = tmp_path / "tiny.toml"
    space.write_text(TINY_SPACE)
    args = [sys.executable, "search.py", "--space", space, "--max-params", "2000", "--trials", trials,
            "--train-subset", "500", "--threads", "1", "--jobs", "1", "--results-dir", tmp_path / "r", "--data-dir", mnist_root]
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.Popen([str(a) for a in args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _wait_for_first_trial(proc, tmp_path) -> None:
    """Until the first trial line is printed and that trial is stored as COMPLETE."""
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("trial") and "val" in line:
            while time.monotonic() < deadline:
                with sqlite3.connect(tmp_path / "r" / "nas.db", timeout=30) as db:
                    if db.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0]:
                        return
                time.sleep(0.05)
    proc.kill()
    pytest.fail("no trial finished: " + "".join(lines) + proc.stderr.read())


def _trials(tmp_path):
    storage = f"sqlite:///{tmp_path / 'r' / 'nas.db'}"
    return optuna.load_study(study_name="tiny-2000-sub500", storage=storage).get_trials()


@pytest.mark.integration
def test_ctrl_c_marks_the_running_trial_writes_reports_and_exits_130(tmp_path, mnist_root):
    proc = _start(tmp_path, mnist_root, trials=50)
    _wait_for_first_trial(proc, tmp_path)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    results = tmp_path / "r" / "tiny-2000-sub500"
    for name in ("trials.csv", "frontier.csv", "frontier.html", "best.safetensors", "best.json"):
        assert (results / name).is_file(), name
    trials = _trials(tmp_path)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert trials[0].state == TrialState.COMPLETE and "weights_artifact" in trials[0].user_attrs
    assert not list(results.glob(".*.tmp"))
    export.load(results / "best.safetensors")  # the exported best model is whole


@pytest.mark.integration
@pytest.mark.skipif(not hasattr(study_mod, "heartbeat_settings"), reason="needs configurable heartbeats")
def test_sigkill_then_the_same_command_resumes(tmp_path, mnist_root):
    env = {"NAS_HEARTBEAT_SECONDS": "1", "NAS_GRACE_SECONDS": "2"}
    proc = _start(tmp_path, mnist_root, trials=50, env=env)
    _wait_for_first_trial(proc, tmp_path)
    proc.kill()
    proc.communicate(timeout=30)
    before = {t.number: t for t in _trials(tmp_path) if t.state == TrialState.COMPLETE}
    assert before
    time.sleep(2.5)  # the killed trial's heartbeat goes stale
    again = _start(tmp_path, mnist_root, trials=len(before) + 1, env=env)
    out, err = again.communicate(timeout=180)
    assert again.returncode == 0, err
    after = _trials(tmp_path)
    assert not [t for t in after if t.state == TrialState.RUNNING]
    for number, t in before.items():
        assert after[number].state == TrialState.COMPLETE and after[number].value == t.value
    assert study_mod.trained_count(optuna.load_study(study_name="tiny-2000-sub500",
                                                     storage=f"sqlite:///{tmp_path / 'r' / 'nas.db'}")) >= len(before) + 1


def _objective(tmp_path, splits, quiet=True):
    config = SearchConfig(trials=3, quiet=quiet, device="cpu")
    space = load_space()
    # no BatchNorm and no activation: nothing can clamp an overflow, so whatever network the sampler draws,
    # huge inputs diverge (a ReLU or a BatchNorm can hide them, depending on the network)
    space.arch.update(bn=False, activation="none")
    space.max_mflops = None  # every sampled candidate reaches training, where these faults happen
    return Objective(config, space, splits, "cpu", export.artifact_store(tmp_path / "a"), tmp_path / "s")


@pytest.mark.parametrize("poison, reason", [(float("nan"), "loss became nan"), (3e38, "loss became")],
                         ids=["nan-input", "exploding-activations"])
def test_bad_numbers_fail_the_trial_with_a_reason_and_the_study_goes_on(tmp_path, poison, reason):
    good = synthetic_splits(n_train=128, n_val=64, n_test=64)
    bad = synthetic_splits(n_train=128, n_val=64, n_test=64)
    bad.x_train = torch.full_like(bad.x_train, poison)
    objective = _objective(tmp_path, bad)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=1, catch=(Exception,))
    objective.splits = good
    study.optimize(objective, callbacks=[Stopper(2, objective)], n_trials=5, catch=(Exception,))
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert failed and reason in failed[0].user_attrs["fail_reason"]
    assert any(t.state == TrialState.COMPLETE for t in study.trials), "the study went on after the failure"


def test_out_of_memory_fails_the_trial_with_a_reason(tmp_path, monkeypatch):
    def no_memory(*a, **k):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 99999999999 bytes")

    monkeypatch.setattr(search, "prepare_model", no_memory)
    study = optuna.create_study(direction="maximize")
    study.optimize(_objective(tmp_path, synthetic_splits(64, 32, 32)), n_trials=2, catch=(Exception,))
    reasons = [t.user_attrs.get("fail_reason", "") for t in study.trials]
    assert all(r.startswith("out of memory") for r in reasons), reasons
    assert all(study_mod.is_trained(t) for t in study.trials)  # counted: a search of such trials ends


def test_when_every_trial_fails_the_summary_says_why(tmp_path, capsys):
    config = SearchConfig(trials=2, results_dir=str(tmp_path), study="allfail")
    study = optuna.create_study(study_name="allfail", storage=f"sqlite:///{tmp_path}/nas.db", direction="maximize")
    for _ in range(2):
        trial = study.ask()
        trial.set_user_attr("params", 100)
        trial.set_user_attr("fail_reason", "TrainingDiverged: loss became nan at step 3")
        study.tell(trial, state=TrialState.FAIL)
    search.finish(config, study, load_space(), 1.0)
    out = capsys.readouterr().out
    assert "no trial completed" in out and "2x TrainingDiverged: loss became nan" in out


def test_a_crash_mid_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "trials.csv"
    target.write_text("old,complete\n")

    def half_then_crash(self, text, *a, **k):
        Path.write_bytes(self, text[: len(text) // 2].encode())
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", half_then_crash)
    with pytest.raises(OSError):
        fileio.write_text(target, "new,half,written,file\n" * 100)
    monkeypatch.undo()
    assert target.read_text() == "old,complete\n"
    assert [p.name for p in tmp_path.iterdir()] == ["trials.csv"]


def test_a_crash_while_saving_weights_leaves_no_half_written_best(tmp_path, monkeypatch):
    from nas.references import by_name
    from nas.build import build

    candidate = by_name("R2")
    model = build(candidate.arch)
    best = tmp_path / "best.safetensors"
    export.save(model, candidate, best)
    good = best.read_bytes()

    def crash(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        export.save(model, candidate, best)
    assert best.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.json", "best.safetensors"]
    export.load(best)


def test_weights_that_do_not_match_the_spec_or_are_damaged(tmp_path):
    from nas.references import by_name
    from nas.build import build

    r1, r2 = by_name("R1"), by_name("R2")
    path = tmp_path / "w.safetensors"
    export.save(build(r2.arch), r2, path)
    path.with_suffix(".json").write_text(r1.to_json())
    from safetensors.torch import save_file
    save_file({k: v for k, v in build(r2.arch).state_dict().items()}, str(path), metadata={export.SPEC_KEY: r1.to_json()})
    with pytest.raises(export.WeightsError, match="do not fit the spec"):
        export.load(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(export.WeightsError, match="w.safetensors"):
        export.load(path)
    pickled = tmp_path / "model.safetensors"
    torch.save({"w": torch.zeros(2)}, pickled)  # a pickle under a safetensors name: refused, never unpickled
    with pytest.raises(export.WeightsError, match="model.safetensors"):
        export.load(pickled)


def test_no_user_file_is_ever_unpickled():
    bare_load = "torch" + ".load("  # spelt in two parts so that a grep for the call does not find this test
    for path in (ROOT / "nas").glob("*.py"):
        text = path.read_text()
        assert "pickle.load" not in text, path
        for line in text.splitlines():
            if bare_load in line:
                assert "weights_only=True" in line, (path, line)



def _running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_workers_exit_when_their_parent_is_killed(tmp_path, mnist_root):
    """--jobs workers watch their parent: a killed search leaves no orphan training on."""
    args = [sys.executable, "search.py", "--trials", "50", "--jobs", "2", "--train-subset", "2000", "--threads", "1",
            "--results-dir", tmp_path / "r", "--data-dir", mnist_root]
    proc = subprocess.Popen([str(a) for a in args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        for line in proc.stdout:  # wait until the workers train
            if b"] trial" in line:
                break
        workers = [p for p in _children(proc.pid) if Path(f"/proc/{p}/cmdline").read_bytes().find(b"spawn_main") >= 0]
        assert len(workers) == 2
        proc.kill()
        proc.wait(timeout=10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(_running(p) for p in workers):
            time.sleep(0.5)
        alive = [p for p in workers if _running(p)]
        assert not alive, f"orphaned workers still running: {alive}"
    finally:
        proc.kill()


def test_a_trial_that_never_beat_is_failed_and_requeued(tmp_path, monkeypatch):
    """A worker killed between creating a trial and its first heartbeat: two sweeps a grace period apart clean it."""
    monkeypatch.setenv(study_mod.HEARTBEAT_ENV, "1")
    monkeypatch.setenv(study_mod.GRACE_ENV, "2")
    storage = study_mod.open_storage(f"sqlite:///{tmp_path / 'hb.db'}")
    study = optuna.create_study(storage=storage, study_name="hb")
    study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})  # RUNNING, and no heartbeat ever recorded
    time.sleep(2.5)
    study_mod.fail_stale_trials(study)  # Optuna alone skips it; our sweep gives it its first beat
    assert study.trials[0].state == TrialState.RUNNING
    time.sleep(3.5)  # SQLite's now() has one-second resolution: leave a whole second over the 2 s grace
    study_mod.fail_stale_trials(study)
    states = [t.state for t in study.trials]
    assert states[0] == TrialState.FAIL and TrialState.WAITING in states[1:]
