"""What the gRPC storage proxy buys: many light workers on one PostgreSQL study, straight to the database and then
through `search.py serve-storage`. Each worker is a process running Optuna's loop (ask, three suggestions, a sleep
standing in for training, tell; the random sampler) on the project's own storage, with its heartbeats, for a fixed
time. Prints the trials per second and the PostgreSQL connections (pg_stat_activity, sampled every 0.2 s while the
workers run; the most seen, and the median).

    python bench/storage_scale.py [--url postgresql://USER:PASS@HOST:PORT/DB] [--workers 32] [--seconds 20]
                                  [--sleep 0.05]

Without --url it starts a throwaway PostgreSQL cluster of its own (as .ci/run does: the newest
/usr/lib/postgresql/*/bin, run as the postgres user when run as root) and deletes it at the end. The proxy needs the
grpc extra: pip install -e '.[grpc]'.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import optuna  # noqa: E402
import sqlalchemy  # noqa: E402

from common import run_benchmark  # noqa: E402
from nas.engine import liveness  # noqa: E402
from nas.engine.storage import heartbeat_settings, open_storage, redact, sqlalchemy_url  # noqa: E402
from nas.errors import UserError  # noqa: E402

SAMPLE_EVERY = 0.2  # seconds between reads of pg_stat_activity
CONNECTIONS = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
               "AND pid <> pg_backend_pid()")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def own_cluster():
    """A throwaway PostgreSQL cluster on 127.0.0.1 and a free port; its URL. Deleted on exit."""
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if not bins:
        raise UserError("no PostgreSQL in /usr/lib/postgresql: install it, or pass --url postgresql://...")
    bin_dir, folder = bins[-1].parent, Path(tempfile.mkdtemp(prefix="nas-scale-pg-"))
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_pg:
        shutil.chown(folder, "postgres")
    port, password = free_port(), secrets.token_hex(16)
    ctl = [*as_pg, str(bin_dir / "pg_ctl"), "-D", str(folder / "data"), "-l", str(folder / "server.log"), "-w"]
    try:
        subprocess.run([*as_pg, "sh", "-c", 'umask 077 && printf %s "$1" > "$2"', "sh", password, str(folder / "pass")],
                       check=True)
        subprocess.run([*as_pg, str(bin_dir / "initdb"), "-D", str(folder / "data"), "-U", "nas",
                        f"--pwfile={folder / 'pass'}", "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                        "--no-sync"], check=True, capture_output=True)
        settings = (f"listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{folder}'\n"
                    "fsync = off\nmax_connections = 200\n")
        subprocess.run([*as_pg, "sh", "-c", 'printf %s "$1" >> "$2"', "sh", settings,
                        str(folder / "data" / "postgresql.conf")], check=True)
        subprocess.run([*ctl, "start"], check=True, capture_output=True)
        subprocess.run([*as_pg, str(bin_dir / "createdb"), "-h", str(folder), "-p", str(port), "-U", "nas", "scale"],
                       check=True)
        yield f"postgresql://nas:{password}@127.0.0.1:{port}/scale"
    finally:
        subprocess.run([*ctl, "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def unpooled(database: str) -> optuna.storages.RDBStorage:
    """The database without a connection pool: this process holds no connection while the workers are counted."""
    return optuna.storages.RDBStorage(sqlalchemy_url(database), engine_kwargs={"poolclass": sqlalchemy.pool.NullPool})


def worker(url: str, name: str, seconds: float, sleep: float) -> None:
    """One worker process: opens the storage, says "ready", waits for a line on stdin, runs trials for `seconds`,
    prints how many it finished."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=open_storage(url, wait=True),
                              sampler=optuna.samplers.RandomSampler())
    print("ready", flush=True)
    sys.stdin.readline()

    def objective(trial: optuna.Trial) -> float:
        value = sum(trial.suggest_float(f"x{i}", 0, 1) for i in range(3))
        time.sleep(sleep)  # training
        return value

    finished = []
    study.optimize(liveness.beating(study, objective, heartbeat_settings()[0]), timeout=seconds,
                   callbacks=[lambda study, trial: finished.append(trial.number)])
    print(len(finished), flush=True)


def one_arm(storage_url: str, database: str, args) -> tuple[int, float, list[int]]:
    """(trials finished, seconds, PostgreSQL connection counts sampled) of `args.workers` workers on `storage_url`."""
    name = f"scale-{uuid.uuid4().hex[:8]}"
    optuna.create_study(study_name=name, storage=unpooled(database))
    command = [sys.executable, __file__, "--worker", storage_url, name, str(args.seconds), str(args.sleep)]
    procs = [subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for _ in range(args.workers)]
    try:
        for p in procs:
            if p.stdout.readline().strip() != "ready":
                raise UserError(f"a worker failed to start (exit code {p.wait()})")
        engine = sqlalchemy.create_engine(sqlalchemy_url(database), poolclass=sqlalchemy.pool.NullPool)
        counts, done = [], threading.Event()

        def sample() -> None:
            with engine.connect() as c:
                while not done.wait(SAMPLE_EVERY):
                    counts.append(c.execute(sqlalchemy.text(CONNECTIONS)).scalar())

        sampler = threading.Thread(target=sample)
        started = time.perf_counter()
        for p in procs:  # all at once: the ready workers block on their stdin
            p.stdin.write("go\n")
            p.stdin.flush()
        sampler.start()
        finished = sum(int(p.stdout.readline() or 0) for p in procs)
        seconds = time.perf_counter() - started
        done.set()
        sampler.join()
        if any(p.wait() != 0 for p in procs):
            raise UserError("a worker failed; see its error above")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    optuna.delete_study(study_name=name, storage=unpooled(database))
    return finished, seconds, counts


@contextlib.contextmanager
def proxy_for(database: str):
    """`search.py serve-storage` in front of `database`; its grpc:// URL."""
    port = free_port()
    server = subprocess.Popen([sys.executable, str(ROOT / "search.py"), "serve-storage", "--storage", database,
                               "--port", str(port), "--host", "127.0.0.1"], stdout=subprocess.DEVNULL)
    url = f"grpc://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                open_storage(url)
                break
            except UserError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise UserError(f"serve-storage did not start (exit code {server.poll()})") from None
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def report(label: str, finished: int, seconds: float, counts: list[int]) -> None:
    print(f"{label:<22} {finished:>6} trials in {seconds:5.1f} s = {finished / seconds:6.1f} trials/s; PostgreSQL "
          f"connections: max {max(counts, default=0)}, median {statistics.median(counts) if counts else 0:g} "
          f"({len(counts)} samples)", flush=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        url, name, seconds, sleep = sys.argv[2:6]
        worker(url, name, float(seconds), float(sleep))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="a PostgreSQL database to use (default: a throwaway cluster of its own)")
    p.add_argument("--workers", type=int, default=32)
    p.add_argument("--seconds", type=float, default=20.0, help="how long each worker starts trials")
    p.add_argument("--sleep", type=float, default=0.05, help="seconds each trial sleeps, standing in for training")
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with contextlib.nullcontext(args.url) if args.url else own_cluster() as database:
        open_storage(database).engine.dispose()  # Optuna's tables, made once; an unreachable database fails here
        print(f"{args.workers} workers for {args.seconds:g} s each, {args.sleep:g} s per trial, on "
              f"{redact(sqlalchemy_url(database))}", flush=True)
        report("direct to PostgreSQL", *one_arm(database, database, args))
        with proxy_for(database) as url:
            report("through the proxy", *one_arm(url, database, args))


if __name__ == "__main__":
    run_benchmark(main)
