"""`serve-storage`: Optuna's gRPC storage proxy server in front of the database, so that hundreds of workers
(`--storage grpc://HOST:PORT`) share its few database connections. It serves the search's own storage, which rides
out the database's outages, and relays the workers' heartbeats and sweeps (nas.engine.liveness)."""
from __future__ import annotations

import signal
import socket
import warnings
from concurrent.futures import ThreadPoolExecutor

import optuna

from nas import logs
from nas.errors import StorageError, first_line
from nas.engine import liveness, optuna_internals as internals
from nas.engine.interrupts import CTRL_C, Interrupted
from nas.engine.proxy_client import needs_grpc
from nas.engine.retry import MAX_DELAY
from nas.engine.storage import PROXY_SCHEME, fail_stale_trials, heartbeat_settings, open_storage, redact

PROXY_THREADS = 4  # the server's request threads, and so the most database connections it holds


def serve(url: str, host: str, port: int) -> None:
    """Serves the storage at `url` on host:port until SIGINT or SIGTERM, which stop it with one line."""
    needs_grpc()
    if url.startswith(PROXY_SCHEME):
        raise StorageError(f"serve-storage --storage {url}: give the database the proxy fronts (postgresql://... or "
                           f"sqlite:///...); workers pass the proxy's grpc://HOST:PORT")
    check_free(host, port)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not Optuna's "Server started" lines: ours says it
    # a restarted proxy sweeps nothing until its workers' beats, retried with backoff, have come back, and their
    # trials have had a grace period since
    relay = liveness.Relay(internals.cached(open_storage(url, connections=PROXY_THREADS)), fail_stale_trials,
                           quiet=heartbeat_settings()[1] + MAX_DELAY)
    CTRL_C.install()
    try:
        with CTRL_C.stoppable(), warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            everywhere = host.strip("[]") in ("0.0.0.0", "::")  # then workers name this machine as they reach it
            logs.line(f"serving {redact(url)} to workers at --storage grpc://"
                      f"{socket.gethostname() if everywhere else host}:{port} (at most {PROXY_THREADS} database "
                      f"connections); Ctrl-C to stop")
            optuna.storages.run_grpc_proxy_server(relay, host=host, port=port,
                                                  thread_pool=ThreadPoolExecutor(PROXY_THREADS))
    except Interrupted as e:
        logs.line(f"storage proxy stopped by {signal.Signals(e.signum).name}")
    except RuntimeError as e:
        if "bind" not in str(e):
            raise
        raise StorageError(f"serve-storage cannot listen on {host}:{port}: {first_line(e)}") from None
    finally:
        CTRL_C.uninstall()


def check_free(host: str, port: int) -> None:
    """A StorageError if host:port cannot be listened on (in use, or not this machine's address). gRPC would share a
    port with another gRPC server (SO_REUSEPORT) and split the workers between the two."""
    bare = host.strip("[]")  # gRPC's IPv6 form, [::]
    try:
        with socket.create_server((bare, port), family=socket.AF_INET6 if ":" in bare else socket.AF_INET):
            pass
    except (OSError, OverflowError) as e:  # OverflowError: a port over 65535
        raise StorageError(f"serve-storage cannot listen on {host}:{port}: {getattr(e, 'strerror', None) or e}"
                           ) from None
