"""The gRPC storage proxy for many workers: `search.py serve-storage` in front of the database, workers at
`--storage grpc://HOST:PORT`. Heartbeats, the re-queueing of a killed worker's trial, the exact total and outage
recovery, each through a real `serve-storage` process over SQLite, and over PostgreSQL when NAS_TEST_POSTGRES_URL is
set (`.ci/run` starts one); bad input is one line."""
import importlib.util
import os
import shlex
import signal
import socket
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from nas import cli
from nas.config import SearchConfig
from nas.engine import liveness, optuna_internals as internals, proxy_client
from nas.engine import storage as storage_mod, study as study_mod
from nas.engine.storage import open_storage, sqlalchemy_url
from nas.engine.retry import StorageUnreachable
from nas.errors import StorageError
from nas.results import summary
from tests.conftest import ROOT, service_address, throwaway_study
from tests.test_parallel import (check_trained_trials, command, environment, kill_in_training, outage, trials_of,
                                 wait_for_trained)

if importlib.util.find_spec("grpc") is None:
    if os.environ.get("CI") == "true":
        pytest.fail("CI needs grpcio for the storage proxy: pip install -e '.[grpc]'", pytrace=False)
    pytest.skip("grpcio is not installed (pip install 'tinynas[grpc]')", allow_module_level=True)
import grpc  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used:UserWarning")
optuna.logging.set_verbosity(optuna.logging.WARNING)
SEARCH = str(ROOT / "search.py")
X = {"x": optuna.distributions.FloatDistribution(0, 1)}
BEATS = {"NAS_HEARTBEAT_SECONDS": "1", "NAS_GRACE_SECONDS": "3"}  # a killed worker's trial is stale in seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request, tmp_path):
    """The database behind the proxy: a fresh SQLite file, or the test PostgreSQL server."""
    return f"sqlite:///{tmp_path / 'nas.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")


@pytest.fixture
def study_name(database):
    yield from throwaway_study(database, "test-proxy")


class Proxy:
    """A `search.py serve-storage` process in front of `database`, on a port of its own."""

    def __init__(self, database: str, port: int | None = None):
        self.database, self.port = database, port or free_port()
        self.url = f"grpc://127.0.0.1:{self.port}"
        self.output = ""
        self.process = None

    def start(self) -> "Proxy":
        self.process = subprocess.Popen(
            [sys.executable, SEARCH, "serve-storage", "--storage", self.database, "--port", str(self.port),
             "--host", "127.0.0.1"], env={**os.environ, **BEATS}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                open_storage(self.url)
                return self
            except StorageError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.process.kill()
                    raise AssertionError(f"serve-storage never answered:\n{self.process.communicate()[0]}")
                time.sleep(0.1)

    def kill(self) -> None:
        self.process.kill()
        self.output += self.process.communicate(timeout=30)[0]

    def stop(self) -> str:
        """SIGTERM: one line, exit 0; everything it printed."""
        self.process.send_signal(signal.SIGTERM)
        self.output += self.process.communicate(timeout=30)[0]
        assert self.process.returncode == 0, self.output
        assert self.output.rstrip().endswith("storage proxy stopped by SIGTERM"), self.output
        return self.output


@pytest.fixture
def proxy(database):
    running = Proxy(database).start()
    yield running
    if running.process.poll() is None:
        running.stop()


# -- bad input: one line, a non-zero exit ---------------------------------------------------------------------------
@pytest.mark.parametrize("url, mention", [
    ("grpc://127.0.0.1:{free}", "nothing answers there"),
    ("grpc://127.0.0.1", "grpc://HOST:PORT"),
    ("grpc://127.0.0.1:notaport", "grpc://HOST:PORT"),
])
def test_a_grpc_storage_where_no_proxy_answers_is_one_line_at_once(url, mention):
    started = time.monotonic()
    with pytest.raises(StorageError, match=mention) as caught:
        open_storage(url.format(free=free_port()))
    assert "\n" not in str(caught.value) and time.monotonic() - started < 5


class RpcError(grpc.RpcError):
    def __init__(self, code, details):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


def test_the_proxys_errors_are_one_line_and_only_a_lost_connection_is_retried():
    client = proxy_client.ProxyClient("grpc://[::1]:13000")
    assert proxy_client.address("grpc://[::1]:13000") == ("[::1]", 13000)
    lost = client._error(RpcError(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses"))
    assert isinstance(lost, proxy_client.ProxyUnavailable)
    given_up = client._error(RpcError(grpc.StatusCode.UNKNOWN, "Exception calling application: storage "
                                      "postgresql+psycopg://u:***@db/nas unreachable for 90 s, giving up: refused"))
    assert isinstance(given_up, StorageUnreachable)  # the server's own outage ended as a worker's would
    assert str(given_up) == ("storage proxy grpc://[::1]:13000: storage postgresql+psycopg://u:***@db/nas "
                             "unreachable for 90 s, giving up: refused")
    other = client._error(RpcError(grpc.StatusCode.UNKNOWN, "Exception calling application: a bug\nits traceback"))
    assert type(other) is StorageError and str(other) == "storage proxy grpc://[::1]:13000: a bug"


def test_serve_storage_refuses_bad_input_in_one_line(capsys, monkeypatch):
    def fails(*args) -> str:
        code = cli.main(["serve-storage", *args])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, (code, err)
        return err

    assert "workers pass the proxy's grpc://" in fails("--storage", "grpc://127.0.0.1:1", "--port", str(free_port()))
    err = fails("--storage", "postgresql://nas:hunter2@127.0.0.1:1/nas", "--port", str(free_port()))
    assert "cannot open storage" in err and "hunter2" not in err
    with socket.create_server(("127.0.0.1", 0)) as taken:
        assert "in use" in fails("--storage", "sqlite:///unused.db", "--port", str(taken.getsockname()[1]),
                                 "--host", "127.0.0.1")
    assert "65535" in fails("--storage", "sqlite:///unused.db", "--port", "70000")
    monkeypatch.setattr(proxy_client, "grpc", None)
    assert "pip install 'tinynas[grpc]'" in fails("--storage", "sqlite:///unused.db", "--port", str(free_port()))
    with pytest.raises(StorageError, match=r"pip install 'tinynas\[grpc\]'"):
        open_storage("grpc://127.0.0.1:1")


def test_optunas_own_proxy_server_is_refused_as_it_relays_no_heartbeats(tmp_path):
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", "import sys, optuna; optuna.storages.run_grpc_proxy_server("
                               "optuna.storages.get_storage(sys.argv[1]), host='127.0.0.1', port=int(sys.argv[2]))",
                               f"sqlite:///{tmp_path / 'plain.db'}", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                open_storage(f"grpc://127.0.0.1:{port}")
                raise AssertionError("Optuna's own proxy was taken")
            except StorageError as e:
                if "not a `search.py serve-storage` proxy" in str(e):
                    break
                assert time.monotonic() < deadline and server.poll() is None, str(e)
                time.sleep(0.1)
    finally:
        server.kill()
        server.wait(timeout=30)


def test_the_proxys_server_holds_at_most_its_few_connections_and_the_summary_names_a_dashboard_that_works(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'pool.db'}", connections=3)
    assert storage.engine.pool.size() == 3 and storage.engine.pool._max_overflow == 0
    command_line = summary.dashboard_command(SearchConfig(storage="grpc://h:1"), "s")  # optuna-dashboard lacks grpc
    assert shlex.split(command_line)[:3] == ["python", "search.py", "dashboard"] and "grpc://h:1" in command_line


# -- the four behaviours through a real proxy ------------------------------------------------------------------------
def test_heartbeats_reach_the_database_keep_a_live_trial_and_a_silent_ones_is_failed_and_requeued(
        proxy, database, study_name, monkeypatch):
    """A trial beating through the proxy is never failed; one whose worker never beat is failed and re-queued, with
    its params, a grace period after it got the one beat a sweep gives it."""
    for key, value in BEATS.items():
        monkeypatch.setenv(key, value)
    study = optuna.create_study(storage=open_storage(proxy.url), study_name=study_name)
    silent = study.ask(X)
    live = []

    def objective(trial):  # beats while the silent trial goes stale and is swept
        live.append(trial.number)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and study.get_trials(states=(TrialState.FAIL,)) == []:
            storage_mod.fail_stale_trials(study)
            time.sleep(0.2)
        return trial.suggest_float("x", 0, 1)

    study.optimize(liveness.beating(study, objective, interval=1), n_trials=1)
    direct = optuna.load_study(study_name=study_name, storage=sqlalchemy_url(database))
    trials = {t.number: t for t in direct.get_trials()}
    assert trials[silent.number].state == TrialState.FAIL
    assert trials[live[0]].state == TrialState.COMPLETE
    retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == silent.number]
    assert [(t.state, t.params) for t in retries] == [(TrialState.WAITING, trials[silent.number].params)]
    assert all(liveness.BEAT not in t.system_attrs for t in trials.values())
    beaten = internals.trials_with_a_heartbeat(internals.rdb_storage(internals.study_storage(direct)))
    assert internals.trial_id(trials[live[0]]) in beaten  # the beats are the database's own heartbeats


@pytest.mark.integration
def test_two_workers_through_the_proxy_train_exactly_the_total(proxy, study_name, mnist_root, tmp_path):
    target = 3
    cmd = command(proxy.url, study_name, tmp_path, target)
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=environment(mnist_root), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out
        assert f"dashboard: python search.py dashboard --study {study_name} --storage {proxy.url}" in out
    trials = trials_of(proxy.database, study_name)
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    trained = [t for t in trials if study_mod.is_trained(t)]
    assert len(trained) == target, [(t.number, t.state.name) for t in trials]
    check_trained_trials(trials)
    assert len({t.user_attrs["candidate_id"] for t in trained}) == target


@pytest.mark.integration
def test_a_killed_workers_trial_is_requeued_and_trained_again_through_the_proxy(proxy, study_name, mnist_root,
                                                                               tmp_path):
    """SIGKILL mid-training, then the same command: the proxy's sweep fails the trial once its heartbeat is stale,
    re-queues it, and the rerun trains that candidate; the total is exact."""
    target = 2
    cmd = command(proxy.url, study_name, tmp_path, target, images=3000)
    env = environment(mnist_root)
    worker = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    victim, _ = kill_in_training(proxy.database, study_name, worker)
    assert trials_of(proxy.database, study_name)[victim].state == TrialState.RUNNING

    rerun = subprocess.run(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=180)
    assert rerun.returncode == 0, rerun.stdout
    after = {t.number: t for t in trials_of(proxy.database, study_name)}
    assert not [t.number for t in after.values() if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    killed = after[victim]
    assert killed.state == TrialState.FAIL and not study_mod.is_trained(killed)
    retries = [t for t in after.values() if t.system_attrs.get("failed_trial") == victim]
    assert len(retries) == 1 and study_mod.is_trained(retries[0]), [(t.number, t.state.name) for t in after.values()]
    assert retries[0].user_attrs["candidate_id"] == killed.user_attrs["candidate_id"]
    assert len([t for t in after.values() if study_mod.is_trained(t)]) == target
    check_trained_trials(after.values())


def search_through(proxy: Proxy, study_name: str, mnist_root, tmp_path, interruption) -> str:
    """A search of 4 trials through `proxy`, with `interruption()` once a trial is trained: what it printed, once it
    has ended with exit 0, the exact total, nothing RUNNING or WAITING, and the trials trained before unchanged."""
    target = 4
    worker = subprocess.Popen(command(proxy.url, study_name, tmp_path, target), cwd=tmp_path,
                              env=environment(mnist_root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        before = wait_for_trained(proxy.database, study_name, worker, 1)
        interruption(worker)
        worker.wait(timeout=180)  # its few lines fit in the pipe
    finally:
        if worker.poll() is None:
            worker.kill()
        out = worker.communicate(timeout=30)[0]
    assert worker.returncode == 0, out
    after = {t.number: t for t in trials_of(proxy.database, study_name)}
    for n, t in before.items():
        assert (after[n].state, after[n].value, after[n].user_attrs) == (t.state, t.value, t.user_attrs)
    assert not [t.number for t in after.values() if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert len([t for t in after.values() if study_mod.is_trained(t)]) == target
    return out


@pytest.mark.integration
@pytest.mark.parametrize("database", ["sqlite"], indirect=True)  # the proxy's own outage: any database will do
def test_a_restart_of_the_proxy_mid_search_is_waited_out(proxy, study_name, mnist_root, tmp_path):
    """The proxy killed mid-search and started again 5 s later on the same port: the worker waits, with one line
    at each end, and finishes."""
    def restart(worker):
        proxy.kill()
        time.sleep(5)
        assert worker.poll() is None, "the search ended while the proxy was down:\n" + worker.communicate()[0]
        proxy.start()

    out = search_through(proxy, study_name, mnist_root, tmp_path, restart)
    assert "storage unreachable, retrying" in out and "storage reachable again" in out, out


@pytest.mark.integration
@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
@pytest.mark.stops_postgres
def test_a_database_outage_behind_the_proxy_is_waited_out_by_the_proxy(proxy, study_name, mnist_root, tmp_path):
    """PostgreSQL stopped for 15 s mid-search: the proxy's storage waits it out (its lines say so) while the worker's
    calls wait on the proxy; the search finishes."""
    ctl = shlex.split(service_address("NAS_TEST_POSTGRES_CTL", "control of the PostgreSQL server (pg_ctl -D DATA)"))
    search_through(proxy, study_name, mnist_root, tmp_path, lambda worker: outage(ctl, worker))
    served = proxy.stop()
    assert "storage unreachable, retrying" in served and "storage reachable again" in served, served
