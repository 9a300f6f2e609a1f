"""Where trial weights are kept (nas.engine.artifact_store): a folder, an S3 bucket or the study's own database.

The bucket is on a real S3-compatible server, moto's, which .ci/run starts (NAS_TEST_S3_ENDPOINT); the database is
SQLite, and PostgreSQL too with NAS_TEST_POSTGRES_URL. Two results folders stand for two machines: a search writes
its weights to the store and records where, and export, report and the dashboard from the other folder, given no
store, find them. Weights on a disk the other machine cannot reach leave its reports written and one line.
"""
import io
import os
import shlex
import socket
import sys
import threading
import uuid

import optuna
import pandas as pd
import pytest
from optuna.artifacts.exceptions import ArtifactNotFound

from nas import cli
from nas.config import SearchConfig
from nas.deploy import export
from nas.engine import artifact_store
from nas.engine.artifact_store import BucketStore, DatabaseStore
from nas.engine.retry import Outage
from nas.engine.storage import sqlalchemy_url
from nas.errors import CliError, StorageError
from tests.conftest import ROOT, quadrants_npz, refused, service_address
from tests.test_dashboard import get, get_json, serving

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def s3_endpoint() -> str:
    return service_address("NAS_TEST_S3_ENDPOINT", "an S3-compatible server, http://HOST:PORT")


@pytest.fixture
def bucket(s3_endpoint, monkeypatch) -> str:
    """A new bucket on the test server, which boto3 reaches through AWS_ENDPOINT_URL as a user's would."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # moto takes any; another server, the caller's own
        monkeypatch.setenv(var, os.environ.get(var, "test"))
    import boto3

    name = f"nas-test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/nas.db"
    return request.getfixturevalue("postgres_url")


# -- the kinds of store, and the flags ------------------------------------------------------------------------------
@pytest.mark.parametrize("where, kind", [("db", "db"), ("s3://bucket/runs/a", "s3"), ("results/a", "folder"),
                                         ("file:///tmp/a", "folder"), ("sqlite:///x.db", "database"),
                                         ("postgresql+psycopg://u@h/db", "database")])
def test_each_kind_of_store_is_told_by_its_url(where, kind):
    assert artifact_store.kind(where) == kind


def test_an_unknown_url_and_both_flags_are_refused_in_one_line(capsys):
    with pytest.raises(CliError, match="gs://b: not a folder, s3://BUCKET/PREFIX, db or a database URL"):
        artifact_store.kind("gs://b")
    with pytest.raises(CliError, match="not both"):
        artifact_store.given(SearchConfig(artifact_dir="a", artifact_store="db"))
    with pytest.raises(SystemExit) as exited:
        cli.main(["report", "--study", "s", "--artifact-dir", "a", "--artifact-store", "db"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not allowed with argument" in err


def test_the_database_store_needs_an_sql_storage():
    with pytest.raises(CliError, match="grpc://h:1 is not one; give the database's URL"):
        artifact_store.open_store("db", "grpc://h:1")


def test_an_s3_store_without_boto3_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "boto3", None)  # importlib finds no boto3
    with pytest.raises(StorageError, match=r"needs boto3: pip install 'tinynas\[s3\]'"):
        artifact_store.open_store("s3://bucket/runs", "sqlite:///nas.db")


def test_a_folder_store_records_its_absolute_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert export.artifact_store("results/s/artifacts").location == str(tmp_path / "results/s/artifacts")


# -- the database store -------------------------------------------------------------------------------------------
def test_the_database_store_keeps_optunas_artifact_contract(database_url):
    store = DatabaseStore(database_url, "db")
    name = uuid.uuid4().hex
    store.write(name, io.BytesIO(b"first"))
    store.write(name, io.BytesIO(b"second"))  # a write tried again after a lost commit replaces its own row
    with store.open_reader(name) as reader:
        assert reader.read() == b"second"
    store.remove(name)
    for call in (store.open_reader, store.remove):
        with pytest.raises(ArtifactNotFound):
            call(name)


def test_workers_writing_at_once_to_a_new_database_all_store_their_weights(database_url):
    weights = {uuid.uuid4().hex: os.urandom(60_000) for _ in range(12)}  # networks are 10-100 KB
    errors = []

    def worker(names):
        try:
            store = DatabaseStore(database_url, "db")  # each makes the table if it is missing, all at once
            for name in names:
                store.write(name, io.BytesIO(weights[name]))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(list(weights)[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    reader = DatabaseStore(database_url, "db")
    assert all(reader.open_reader(name).read() == data for name, data in weights.items())


def test_a_database_outage_is_waited_out(tmp_path, monkeypatch):
    store = DatabaseStore(f"sqlite:///{tmp_path}/nas.db", "db")
    store._outage = Outage("the test database", sleep=lambda seconds: None)  # a server's store has one (SQLite not)
    begin, failures = store._engine.begin, [refused()]

    def failing_begin():
        if failures:
            raise failures.pop()
        return begin()

    monkeypatch.setattr(store._engine, "begin", failing_begin)
    store.write("a", io.BytesIO(b"weights"))
    assert failures == [] and store.open_reader("a").read() == b"weights"


# -- the S3 store -------------------------------------------------------------------------------------------------
@pytest.mark.s3
def test_the_bucket_store_keeps_its_artifacts_under_its_prefix(bucket):
    store = BucketStore(f"s3://{bucket}/runs/a")
    store.check()
    name = uuid.uuid4().hex
    store.write(name, io.BytesIO(b"weights"))
    with store.open_reader(name) as reader:
        assert reader.read() == b"weights"
    keys = [o["Key"] for o in store._client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == [f"runs/a/{name}"]
    store.remove(name)
    with pytest.raises(ArtifactNotFound):
        store.open_reader(name)


@pytest.mark.s3
def test_a_bucket_that_does_not_exist_fails_the_search_before_it_starts(bucket):
    with pytest.raises(StorageError, match=f"cannot use bucket '{bucket}-none'"):
        artifact_store.writer(SearchConfig(artifact_store=f"s3://{bucket}-none/runs"), "s")


# -- searches on two machines ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def arrays(tmp_path_factory):
    """A small learnable task as an npz file: a search on it takes a few seconds."""
    return quadrants_npz(tmp_path_factory.mktemp("data") / "quadrants.npz", 700, 200)


@pytest.fixture
def study(request):
    """A new study name; deleted from a PostgreSQL test server after the test."""
    name = f"test-store-{uuid.uuid4().hex[:10]}"
    yield name
    url = os.environ.get("NAS_TEST_POSTGRES_URL")
    if url:
        try:
            optuna.delete_study(study_name=name, storage=sqlalchemy_url(url))
        except KeyError:
            pass


def search(arrays, storage, study, results, *extra) -> int:
    return cli.main(["--trials", "2", "--max-params", "3000", "--jobs", "1", "--seed", "3", "--threads", "1",
                     "--dataset", "npz", "--data-dir", str(arrays), "--study", study, "--storage", storage,
                     "--results-dir", str(results), *extra])


def study_command(command, storage, study, results, *extra) -> int:
    return cli.main([command, "--study", study, "--storage", storage, "--results-dir", str(results), *extra])


@pytest.mark.parametrize("kind", ["db", pytest.param("s3", marks=pytest.mark.s3)])
def test_a_search_keeps_its_weights_where_another_machine_finds_them(kind, database_url, study, arrays, tmp_path,
                                                                      capsys, request):
    where = "db" if kind == "db" else f"s3://{request.getfixturevalue('bucket')}/runs"
    assert search(arrays, database_url, study, tmp_path / "a", "--artifact-store", where) == 0
    out = capsys.readouterr().out
    trials = optuna.load_study(study_name=study, storage=sqlalchemy_url(database_url)).get_trials()
    trained = [t for t in trials if "weights_artifact" in t.user_attrs]
    assert trained and {(t.user_attrs["weights_store"], t.user_attrs["weights_host"]) for t in trained} == {
        (where, socket.gethostname())}
    assert not (tmp_path / "a" / study / "artifacts").exists()  # no weights on this machine's disk

    # the other machine: its own results folder, no store named
    other = tmp_path / "b"
    assert study_command("export", database_url, study, other, "--out", str(other / "x.safetensors")) == 0
    assert export.load(other / "x.safetensors")  # the best network, whole
    assert study_command("report", database_url, study, other) == 0
    assert (other / study / "best.safetensors").read_bytes() == (other / "x.safetensors").read_bytes()
    assert pd.read_csv(other / study / "frontier.csv")["test_acc"].notna().all()

    # the printed dashboard command serves the weights from the store
    (line,) = [line for line in out.splitlines() if line.startswith("dashboard: ")]
    command = shlex.split(line.removeprefix("dashboard: "))
    assert command[:3] == ["python", "search.py", "dashboard"]
    with serving(lambda port: [sys.executable, str(ROOT / "search.py"), *command[2:], "--port", str(port)],
                 tmp_path) as (port, meta):
        assert meta["artifact_is_available"]
        (summary,) = [s for s in get_json(port, "/api/studies")["study_summaries"] if s["study_name"] == study]
        detail = get_json(port, f"/api/studies/{summary['study_id']}")
        stored = artifact_store.open_store(where, database_url)
        for t in [t for t in detail["trials"] if t["artifacts"]]:
            (artifact,) = t["artifacts"]
            served = get(port, f"/artifacts/{summary['study_id']}/{t['trial_id']}/{artifact['artifact_id']}")
            assert served == stored.open_reader(artifact["artifact_id"]).read()


def test_weights_on_another_machines_disk_leave_the_reports_written_and_one_line(study, arrays, tmp_path, capsys):
    storage = f"sqlite:///{tmp_path}/shared.db"
    assert search(arrays, storage, study, tmp_path / "a") == 0  # weights in machine a's results folder
    (tmp_path / "a" / study / "artifacts").rename(tmp_path / "a-disk")  # which machine b cannot see
    capsys.readouterr()
    before = [(t.number, t.state) for t in optuna.load_study(study_name=study, storage=storage).get_trials()]

    # the same command on machine b: the total is reached, nothing is trained, every report it can is written
    assert search(arrays, storage, study, tmp_path / "b") == 0
    out = capsys.readouterr().out
    assert [(t.number, t.state) for t in optuna.load_study(study_name=study, storage=storage).get_trials()] == before
    best = optuna.load_study(study_name=study, storage=storage).best_trial
    (line,) = [line for line in out.splitlines() if "not reachable" in line]
    assert f"trial {best.number}'s weights" in line and f"on host {socket.gethostname()} in {tmp_path / 'a'}" in line
    assert "best.safetensors and best.onnx are not written" in line
    assert sorted(p.name for p in (tmp_path / "b" / study).glob("*.*")) == ["frontier.csv", "frontier.html",
                                                                             "trials.csv"]
    assert study_command("report", storage, study, tmp_path / "b") == 0

    # export cannot write a file it cannot read: one line, naming the host
    capsys.readouterr()
    assert study_command("export", storage, study, tmp_path / "b", "--out", str(tmp_path / "x.safetensors")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"trial {best.number}'s weights" in err and socket.gethostname() in err
