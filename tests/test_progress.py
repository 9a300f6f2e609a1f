"""Live progress: what it reads from the study, its plain lines' rate, and the updating line on a terminal only."""
import fcntl
import io
import os
import pty
import select
import struct
import subprocess
import sys
import termios

import numpy as np
import optuna
from optuna.trial import TrialState

from nas.engine import progress
from nas.engine.study import REJECTED
from tests.conftest import ROOT, quadrant_images


def _study() -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    for acc, params in ((0.90, 1_000), (0.95, 2_000), (0.95, 2_500)):
        trial = study.ask()
        trial.set_user_attr("params", params)
        study.tell(trial, acc)
    rejected = study.ask()
    rejected.set_user_attr("rejected", REJECTED)
    study.tell(rejected, state=TrialState.PRUNED)
    return study


def test_a_snapshot_counts_trained_and_rejected_trials_and_the_best_the_smallest_of_equals():
    now = progress.Snapshot.of(_study())
    assert (now.trained, now.rejected, now.best_acc, now.best_params) == (3, 1, 0.95, 2_000)
    assert now.details() == "1 rejected, best val 95.00% (2,000 params)"


def test_plain_lines_come_at_most_every_30_seconds_and_only_when_something_changed(monkeypatch, capsys):
    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    study = optuna.create_study(direction="maximize")
    shown = progress.Progress(study, 10, stream=io.StringIO())  # not a terminal: no bar
    assert shown.bar is None
    now = progress.Snapshot.of(_study())
    clock[0] += 29
    shown.show(now)
    assert capsys.readouterr().out == ""
    clock[0] += 1
    shown.show(now)
    assert capsys.readouterr().out == ("progress: 3/10 trained, 1 rejected, best val 95.00% (2,000 params); "
                                       "30s elapsed, about 1m10s left\n")
    clock[0] += 60
    shown.show(now)  # nothing new
    assert capsys.readouterr().out == ""


def _search(argv: list[str], terminal: bool) -> str:
    """search.py's stdout and stderr together, on a 100-column pseudo-terminal or on a pipe."""
    command = [sys.executable, str(ROOT / "search.py"), *argv]
    if not terminal:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
        assert done.returncode == 0, done.stdout
        return done.stdout.decode()
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(command, stdout=child, stderr=child, close_fds=True)
    os.close(child)
    out = b""
    while select.select([main], [], [], 300)[0]:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(main)
    assert proc.wait(timeout=60) == 0, out
    return out.decode()


def test_an_updating_line_on_a_terminal_and_none_on_a_pipe_or_when_quiet(tmp_path):
    x, y = quadrant_images(600, 0)
    x_test, y_test = quadrant_images(100, 1)
    np.savez(tmp_path / "q.npz", x_train=x, y_train=y, x_test=x_test, y_test=y_test)
    common = ["--dataset", "npz", "--data-dir", str(tmp_path / "q.npz"), "--max-params", "3000", "--jobs", "1"]
    on_terminal = _search([*common, "--trials", "2", "--results-dir", str(tmp_path / "a")], terminal=True)
    assert "\r0/2 trained |" in on_terminal and "trial    1 " in on_terminal
    on_pipe = _search([*common, "--trials", "2", "--results-dir", str(tmp_path / "b")], terminal=False)
    assert "trial    1 " in on_pipe and "trained |" not in on_pipe and "\r" not in on_pipe
    quiet = _search([*common, "--trials", "2", "--quiet", "--results-dir", str(tmp_path / "c")], terminal=True)
    assert quiet == ""
