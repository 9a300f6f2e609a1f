"""A worker's side of the gRPC storage proxy (`--storage grpc://HOST:PORT`, served by `serve-storage`): Optuna's
proxy client, which waits out the proxy's restarts and turns the proxy's errors into one line."""
from __future__ import annotations

import functools
import warnings
from urllib.parse import urlsplit

import optuna
from optuna.storages import GrpcStorageProxy

from nas.errors import StorageError, first_line
from nas.engine import liveness
from nas.engine.retry import Outage, StorageUnreachable, stored_as

try:
    import grpc
except ImportError:  # the grpc extra is not installed: needs_grpc() says how to install it
    grpc = None

INSTALL = "pip install 'tinynas[grpc]'"
APPLICATION_ERROR = "Exception calling application: "  # how gRPC prefixes an error the server raised


class ProxyUnavailable(ConnectionError):
    """Nothing answers at the proxy's address, or the connection to it dropped: worth retrying."""


def needs_grpc() -> None:
    if grpc is None:
        raise StorageError(f"a grpc:// storage and serve-storage need grpcio: {INSTALL}")


def address(url: str) -> tuple[str, int]:
    """(host, port) of grpc://HOST:PORT."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # not a number, or out of range
        port = None
    if parts.scheme != "grpc" or not parts.hostname or port is None or parts.path not in ("", "/"):
        raise StorageError(f"storage {url}: a storage proxy's address is grpc://HOST:PORT")
    return (f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname), port  # gRPC's form of IPv6


class ProxyClient(GrpcStorageProxy):
    """Optuna's gRPC proxy client, whose every call waits out a restart of the proxy or a network cut for up to
    retry.RETRY_SECONDS (one line when it starts, one when it ends), then fails with one line (StorageUnreachable);
    an error the server raised (the database unreachable for as long) arrives as one line too.

    A write whose answer was lost may have been stored: finishing a trial is recognised on the retry; a trial
    created twice leaves one RUNNING with no worker, which the server's sweep fails and re-queues (nas.engine.storage
    gives a trial that never beat one beat, so it goes stale a grace period later)."""

    def __init__(self, url: str):
        self.url = url
        self._outage = Outage(url, is_transient=lambda e: isinstance(e, ProxyUnavailable))
        host, port = address(url)
        with warnings.catch_warnings():  # experimental since Optuna 4.2: a warning would reach the user's terminal
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            super().__init__(host=host, port=port)

    def attempt(self, method, *args, **kwargs):
        """One call of `method` (a GrpcStorageProxy method), its gRPC errors as ours."""
        try:
            return method(self, *args, **kwargs)
        except grpc.RpcError as e:
            raise self._error(e) from e

    def _error(self, e: grpc.RpcError) -> Exception:
        details = (e.details() or e.code().name).removeprefix(APPLICATION_ERROR)
        if e.code() == grpc.StatusCode.UNAVAILABLE:
            return ProxyUnavailable(details)
        kind = StorageUnreachable if "unreachable" in details else StorageError  # retry.StorageUnreachable's text
        return kind(f"storage proxy {self.url}: {first_line(details)}")

    def set_trial_state_values(self, trial_id: int, state, values=None) -> bool:
        def attempt(again: bool) -> bool:
            try:
                return self.attempt(GrpcStorageProxy.set_trial_state_values, trial_id, state, values)
            except optuna.exceptions.UpdateFinishedTrialError:
                if again and state.is_finished():
                    if stored_as(self.attempt(GrpcStorageProxy.get_trial, trial_id), state, values):
                        return True  # the failed attempt was stored; only its answer was lost
                raise

        return self._outage.call(attempt)


def _retried(name: str):
    method = getattr(GrpcStorageProxy, name)

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        return self._outage.call(lambda again: self.attempt(method, *args, **kwargs))
    return call


# every storage call the client makes over gRPC (BaseStorage's others are made of these), but set_trial_state_values
RETRIED = sorted(name for name, value in vars(GrpcStorageProxy).items() if callable(value) and not name.startswith("_")
                 and name not in ("wait_server_ready", "close", "set_trial_state_values"))
for _name in RETRIED:
    setattr(ProxyClient, _name, _retried(_name))


def open_proxy(url: str, wait: bool = False) -> ProxyClient:
    """The proxy at `url`, once it answers as `serve-storage` does: at once, or within the retry period if `wait`.
    Optuna's own proxy server is refused: without heartbeats, a killed worker's trial would never be re-queued."""
    needs_grpc()
    client = ProxyClient(url)
    probe = client.set_study_system_attr if wait else functools.partial(
        client.attempt, GrpcStorageProxy.set_study_system_attr)
    try:
        probe(liveness.PROBE_STUDY, liveness.SWEEP, True)
    except (ProxyUnavailable, StorageUnreachable) as e:
        raise StorageError(f"cannot open storage {url}: nothing answers there ({first_line(e)}); start the proxy "
                           f"with `search.py serve-storage --storage DATABASE_URL --port {address(url)[1]}`") from None
    except KeyError:
        raise StorageError(f"storage {url} is not a `search.py serve-storage` proxy, which heartbeats and the "
                           f"re-queueing of killed workers' trials need") from None
    return client
