"""Where trial weights are kept, as Optuna artifact stores: a folder (the default, `<results-dir>/<study>/artifacts`),
an S3 bucket (`s3://BUCKET/PREFIX`, Optuna's Boto3ArtifactStore), or a database (`db`, the study's own `--storage`,
or a database URL) in a table of its own. Each trial records where its weights went (`weights_store`, and
`weights_host`), so that a report, an export or the dashboard on any machine looks there."""
from __future__ import annotations

import importlib.util
import io
from pathlib import Path
from typing import BinaryIO

import optuna
import sqlalchemy
from optuna.artifacts.exceptions import ArtifactNotFound
from sqlalchemy.engine import make_url

from nas.config import SearchConfig
from nas.deploy import export
from nas.errors import CliError, StorageError, first_line
from nas.fileio import writable_dir
from nas.engine.retry import Outage
from nas.engine.storage import SERVER_CONNECT_ARGS, redact, sqlalchemy_url

DB = "db"  # --artifact-store db: the study's own database
DATABASES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb")  # the URL schemes of a database store
TABLE = sqlalchemy.Table("tinynas_artifacts", sqlalchemy.MetaData(),
                         sqlalchemy.Column("artifact_id", sqlalchemy.String(255), primary_key=True),
                         sqlalchemy.Column("data", sqlalchemy.LargeBinary(2 ** 30), nullable=False))


def given(config: SearchConfig) -> str | None:
    """The store the settings name (--artifact-store, or --artifact-dir as a folder), None for the default."""
    if config.artifact_store and config.artifact_dir:
        raise CliError("give --artifact-store or --artifact-dir, not both (--artifact-dir DIR is --artifact-store DIR)")
    return config.artifact_store or config.artifact_dir


def kind(where: str) -> str:
    """"folder" (a path or file:// URL), "s3" (s3://BUCKET[/PREFIX]), DB (the study's database) or "database" (a
    database URL); a one-line error for anything else."""
    if where == DB:
        return DB
    scheme = _scheme(where)
    if scheme in ("", "file"):
        return "folder"
    if scheme in ("s3", *DATABASES):
        return "s3" if scheme == "s3" else "database"
    raise CliError(f"--artifact-store {redact(where)}: not a folder, s3://BUCKET/PREFIX, db or a database URL")


def _scheme(url: str) -> str:
    """A URL's scheme without its driver ("postgresql" for postgresql+psycopg://...); "" for a plain path."""
    return url.split("://", 1)[0].split("+", 1)[0].lower() if "://" in url else ""


def folder(where: str) -> Path:
    """A folder store's folder."""
    return Path(where.removeprefix("file://"))


def writer(config: SearchConfig, study_name: str):
    """The store a search's trials write their weights to, checked now: a folder is made writable, a bucket must
    exist, a database gets its table."""
    where = given(config)
    if where is None:
        return export.artifact_store(config.artifacts(study_name))
    if kind(where) == "folder":
        writable_dir(folder(where), "--artifact-store" if config.artifact_store else "--artifact-dir")
        return export.FolderStore(folder(where))
    store = open_store(where, config.storage_url)
    store.check()
    return store


def reader(config: SearchConfig, study: optuna.Study) -> "Stores":
    """Every place the study's weights may be, in turn: the store the settings name, those its trials recorded, then
    the default folder (for trials stored before stores were recorded)."""
    places = [given(config)] + [t.user_attrs.get("weights_store") for t in study.get_trials(deepcopy=False)]
    places.append(str(config.artifacts(study.study_name)))
    places = [str(folder(p).absolute()) if kind(p) == "folder" else p for p in places if p]
    return Stores(list(dict.fromkeys(places)), config.storage_url)


def open_store(where: str, storage_url: str):
    """The store `where` names (see `kind`); `db` is the database of `storage_url`. A folder is not created here."""
    found = kind(where)
    if found == DB:
        return DatabaseStore(storage_url, DB)
    if found == "s3":
        return BucketStore(where)
    if found == "database":
        return DatabaseStore(storage_url if _same_database(where, storage_url) else where, _without_password(where))
    return export.FolderStore(folder(where))


def folder_of(config: SearchConfig, study_name: str) -> Path | None:
    """The folder a search writes weights to; None if it writes them to a bucket or a database."""
    where = given(config)
    if where is None:
        return config.artifacts(study_name)
    return folder(where) if kind(where) == "folder" else None


def _without_password(url: str) -> str:
    """A database URL as trials record it: without its password (a reader's PGPASSWORD or ~/.pgpass gives it)."""
    try:
        return make_url(url).set(password=None).render_as_string(hide_password=False)
    except Exception as e:  # noqa: BLE001 - SQLAlchemy raises ArgumentError or ValueError for a URL it cannot parse
        raise CliError(f"--artifact-store {redact(url)}: not a database URL ({first_line(e)})") from None


def _same_database(url: str, other: str) -> bool:
    try:
        return _without_password(sqlalchemy_url(url)) == _without_password(sqlalchemy_url(other))
    except CliError:  # the study's storage is no database URL (grpc://)
        return False


class Stores:
    """Optuna's ArtifactStore protocol over several stores, each opened when first needed: a read tries each in
    turn, a write goes to the first."""

    def __init__(self, places: list[str], storage_url: str):
        self.places, self._storage_url, self._opened = places, storage_url, {}

    def _store(self, where: str):
        if where not in self._opened:
            self._opened[where] = open_store(where, self._storage_url)
        return self._opened[where]

    def open_reader(self, artifact_id: str) -> BinaryIO:
        missed = []
        for where in self.places:
            try:
                return self._store(where).open_reader(artifact_id)
            except ArtifactNotFound:
                missed.append(redact(where))
            except Exception as e:  # noqa: BLE001 - a store that cannot be opened or does not answer: look on
                missed.append(f"{redact(where)}: {first_line(e)}")
        raise ArtifactNotFound(f"not in {'; '.join(missed)}")

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self._store(self.places[0]).write(artifact_id, content_body)

    def remove(self, artifact_id: str) -> None:
        self._store(self.places[0]).remove(artifact_id)


class BucketStore:
    """Optuna's Boto3ArtifactStore under a key prefix. The endpoint (an S3-compatible server), region and
    credentials come from the standard AWS settings: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ~/.aws/config..."""

    def __init__(self, url: str):
        if importlib.util.find_spec("boto3") is None:
            raise StorageError(f"--artifact-store {url} needs boto3: pip install 'tinynas[s3]'")
        import boto3

        self.location = redact(url)
        self.bucket, _, prefix = url.split("://", 1)[1].partition("/")
        self._prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._client = boto3.client("s3")
        self._store = optuna.artifacts.Boto3ArtifactStore(self.bucket, client=self._client)

    def check(self) -> None:
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except Exception as e:  # noqa: BLE001 - botocore's errors: no bucket, no credentials, no endpoint
            raise StorageError(f"--artifact-store {self.location}: cannot use bucket {self.bucket!r} "
                               f"({first_line(e)})") from None

    def open_reader(self, artifact_id: str) -> BinaryIO:
        return self._store.open_reader(self._prefix + artifact_id)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self._store.write(self._prefix + artifact_id, content_body)

    def remove(self, artifact_id: str) -> None:
        self._store.remove(self._prefix + artifact_id)


class DatabaseStore:
    """Artifacts as rows of a table of their own (TABLE) in an SQL database, SQLite or PostgreSQL: a connection per
    call (a trial writes once), and a server's outages waited out as the study's storage waits them out."""

    def __init__(self, url: str, location: str):
        self.location, url = location, sqlalchemy_url(url)
        scheme = _scheme(url)
        if scheme not in DATABASES:
            raise CliError(f"--artifact-store db keeps weights in the --storage database, and {redact(url)} is not "
                           f"one; give the database's URL: --artifact-store postgresql://...")
        connect_args = {"timeout": 60} if scheme == "sqlite" else dict(SERVER_CONNECT_ARGS) \
            if scheme.startswith("postgres") else {}
        try:
            self._engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool, connect_args=connect_args)
        except Exception as e:  # noqa: BLE001 - a malformed URL, or a driver that is not installed
            raise StorageError(f"--artifact-store: cannot open {redact(url)}: {first_line(e)}") from None
        self._outage = None if scheme == "sqlite" else Outage(redact(url))
        self._ready = False

    def _run(self, work):
        """work(connection) in one transaction, after making the table if it is missing; a server's outage is
        waited out and the whole transaction tried again."""
        def attempt(again: bool):
            if not self._ready:
                self._create_table()
            with self._engine.begin() as connection:
                return work(connection)
        return self._outage.call(attempt) if self._outage else attempt(False)

    def _create_table(self) -> None:
        try:
            TABLE.create(self._engine, checkfirst=True)
        except sqlalchemy.exc.DatabaseError:  # another worker made it at the same moment
            if not sqlalchemy.inspect(self._engine).has_table(TABLE.name):
                raise
        self._ready = True

    def check(self) -> None:
        try:
            self._run(lambda connection: None)
        except StorageError:
            raise
        except Exception as e:  # noqa: BLE001 - SQLAlchemy and driver errors vary; the user needs the reason
            raise StorageError(f"--artifact-store {self.location}: cannot store weights in "
                               f"{redact(str(self._engine.url))} ({first_line(e)})") from None

    def open_reader(self, artifact_id: str) -> BinaryIO:
        data = self._run(lambda c: c.execute(sqlalchemy.select(TABLE.c.data)
                                             .where(TABLE.c.artifact_id == artifact_id)).scalar())
        if data is None:
            raise ArtifactNotFound(f"artifact {artifact_id} is not in {redact(str(self._engine.url))}")
        return io.BytesIO(data)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        data = content_body.read()

        def replace(c):  # a retry after a lost commit finds its own row: replacing it stores the artifact once
            c.execute(TABLE.delete().where(TABLE.c.artifact_id == artifact_id))
            c.execute(TABLE.insert().values(artifact_id=artifact_id, data=data))
        self._run(replace)

    def remove(self, artifact_id: str) -> None:
        if not self._run(lambda c: c.execute(TABLE.delete().where(TABLE.c.artifact_id == artifact_id)).rowcount):
            raise ArtifactNotFound(f"artifact {artifact_id} is not in {redact(str(self._engine.url))}")
