"""optuna-dashboard, started with the exact command a search prints, serves every trial's attributes and weights."""
import contextlib
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from nas.deploy import export
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

SHOWN = ("params", "flops", "val_acc", "train_seconds", "spec", "weights_artifact")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
        assert r.status == 200, path
        return r.read()


def get_json(port: int, path: str):
    return json.loads(get(port, path))


def dashboard_executable() -> str:
    beside = Path(sys.executable).with_name("optuna-dashboard")
    found = str(beside) if beside.exists() else shutil.which("optuna-dashboard")
    assert found, "optuna-dashboard is not installed (it is a dependency in pyproject.toml)"
    return found


def test_dashboard_serves_trials_user_attrs_and_weights(mnist_root, tmp_path):
    # a small SQLite study, by two local workers (--jobs 2), as a user would make it
    env = {**os.environ, "NAS_DATA_DIR": str(mnist_root)}
    search = subprocess.run([sys.executable, str(ROOT / "search.py"), "--trials", "2", "--jobs", "2", "--threads", "1",
                             "--train-subset", "500", "--max-params", "3000", "--study", "dash"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert search.returncode == 0, search.stdout + search.stderr
    command = search_dashboard_command(search.stdout)
    assert command == ["optuna-dashboard", "sqlite:///results/nas.db", "--artifact-dir", "results/dash/artifacts"]

    with dashboard(command, tmp_path) as (port, meta):
        assert meta["artifact_is_available"]

        studies = get_json(port, "/api/studies")["study_summaries"]
        (study,) = [s for s in studies if s["study_name"] == "dash"]
        detail = get_json(port, f"/api/studies/{study['study_id']}")
        assert detail["name"] == "dash"
        complete = [t for t in detail["trials"] if t["state"] == "Complete"]
        assert complete, [t["state"] for t in detail["trials"]]
        for t in complete:
            attrs = {a["key"]: a["value"] for a in t["user_attrs"]}
            assert set(SHOWN) <= set(attrs), sorted(attrs)
            assert json.loads(attrs["spec"])["arch"]
            assert t["params"] and t["intermediate_values"]
            (artifact,) = [a for a in t["artifacts"] if a["artifact_id"] == attrs["weights_artifact"]]
            assert artifact["filename"].endswith(".safetensors")
            body = get(port, f"/artifacts/{study['study_id']}/{t['trial_id']}/{artifact['artifact_id']}")
            assert body == (tmp_path / "results/dash/artifacts" / artifact["artifact_id"]).read_bytes()
            weights = tmp_path / f"trial-{t['number']}.safetensors"
            weights.write_bytes(body)
            model = export.load(weights)  # the served bytes rebuild the trial's network
            assert sum(p.numel() for p in model.parameters()) == int(attrs["params"])


def search_dashboard_command(stdout: str) -> list[str]:
    """The one `dashboard:` line a search prints, split into its words."""
    lines = [line for line in stdout.splitlines() if line.startswith("dashboard: ")]
    assert len(lines) == 1, stdout
    return shlex.split(lines[0].removeprefix("dashboard: "))


def dashboard(command: list[str], cwd: Path):
    """optuna-dashboard run with `command`'s arguments from `cwd`, on a free port: (port, its /api/meta)."""
    return serving(lambda port: [dashboard_executable(), *command[1:], "--host", "127.0.0.1", "--port", str(port),
                                 "--server", "wsgiref", "--quiet"], cwd)


@contextlib.contextmanager
def serving(argv, cwd: Path):
    """A dashboard server, `argv(port)`, run from `cwd` on a free port: (port, its /api/meta)."""
    port = free_port()
    server = subprocess.Popen(argv(port), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                meta = get_json(port, "/api/meta")
                break
            except (urllib.error.URLError, ConnectionError):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"the dashboard did not start:\n{server.communicate()[0]}") from None
                time.sleep(0.3)
        yield port, meta
    finally:
        server.terminate()
        try:
            server.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate()
