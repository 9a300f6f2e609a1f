"""nas/engine/retry.py: an outage waited out with backoff and one line at each end, then one error; only a lost
connection is retried. A fake clock stands in for time; tests/test_storage.py retries a real storage's calls."""
import optuna
import pytest
import sqlalchemy.exc

from nas.engine import retry
from nas.engine.retry import Outage, StorageUnreachable
from nas.errors import StorageError
from tests.conftest import refused


class FakeClock:
    def __init__(self):
        self.time, self.slept = 1000.0, []

    def now(self):
        return self.time

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.time += seconds


def failing(errors, result="ok"):
    """An attempt that raises each of `errors` in turn, then returns `result`; it counts its calls."""
    errors = list(errors)

    def attempt(again):
        attempt.calls.append(again)
        if errors:
            raise errors.pop(0)
        return result
    attempt.calls = []
    return attempt


def test_an_outage_is_waited_out_with_backoff_and_one_line_at_each_end(capsys):
    clock = FakeClock()
    outage = Outage("postgresql://u:***@db/nas", sleep=clock.sleep, clock=clock.now)
    attempt = failing([refused()] * 6)
    assert outage.call(attempt) == "ok"
    assert attempt.calls == [False] + [True] * 6  # `again`: a previous attempt failed, and may have been stored
    assert clock.slept == [0.5, 1, 2, 4, 5, 5]
    out = capsys.readouterr().out.splitlines()
    assert out == ['storage unreachable, retrying for up to 90 s: connection to server at "127.0.0.1", port 5432 '
                   'failed: Connection refused', "storage reachable again after 18 s"]


def test_an_outage_longer_than_the_retry_period_is_one_error_then_no_more_waiting(capsys):
    clock = FakeClock()
    outage = Outage("postgresql://u:***@db/nas", sleep=clock.sleep, clock=clock.now)
    with pytest.raises(StorageUnreachable) as caught:
        outage.call(failing([refused()] * 1000))
    assert isinstance(caught.value, StorageError)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("storage postgresql://u:***@db/nas unreachable for 90 s")
    assert message.endswith("Connection refused") and sum(clock.slept) == pytest.approx(90)
    # a worker that is stopping makes more calls (its trial's failure, say): one attempt each, no more waiting
    slept = len(clock.slept)
    attempt = failing([refused()])
    with pytest.raises(StorageUnreachable):
        outage.call(attempt)
    assert attempt.calls == [False] and len(clock.slept) == slept
    assert outage.call(failing([])) == "ok"  # the server is back: all is normal again
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0].split(" after")[0] for line in lines] == \
           ["storage unreachable, retrying for up to 90 s", "storage still unreachable", "storage reachable again"]


def test_only_a_lost_connection_is_retried():
    outage = Outage("db", sleep=lambda s: pytest.fail("slept"))
    attempt = failing([ValueError("bad value")])
    with pytest.raises(ValueError):
        outage.call(attempt)
    assert attempt.calls == [False]
    # how Optuna wraps SQLAlchemy's errors, and how SQLAlchemy reports a connection it found dead
    try:
        try:
            raise refused()
        except sqlalchemy.exc.SQLAlchemyError as e:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from e
    except optuna.exceptions.StorageInternalError as e:
        wrapped = e
    assert retry.transient(wrapped) and retry.reason(wrapped).endswith("Connection refused")
    assert retry.transient(sqlalchemy.exc.InterfaceError("SELECT 1", {}, Exception("the connection is closed")))
    invalidated = sqlalchemy.exc.DBAPIError("SELECT 1", {}, Exception("gone"), connection_invalidated=True)
    assert retry.transient(invalidated)
    assert not retry.transient(sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("duplicate key")))
    assert not retry.transient(KeyError("no such study"))


def test_an_outage_retries_the_errors_its_caller_names_and_only_those():
    """The gRPC proxy's client retries its own lost connections, not a database's."""
    outage = Outage("grpc://proxy:13000", sleep=lambda s: None, is_transient=lambda e: isinstance(e, ConnectionError))
    attempt = failing([ConnectionError("proxy restarting")] * 3)
    assert outage.call(attempt) == "ok" and attempt.calls == [False, True, True, True]
    with pytest.raises(sqlalchemy.exc.OperationalError):
        outage.call(failing([refused()]))


def test_a_retried_write_recognises_its_own_lost_answer_by_the_stored_state_and_values():
    done = optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, value=0.5)
    assert retry.stored_as(done, optuna.trial.TrialState.COMPLETE, [0.5])
    assert retry.stored_as(done, optuna.trial.TrialState.COMPLETE, None)
    assert not retry.stored_as(done, optuna.trial.TrialState.COMPLETE, [0.25])
    assert not retry.stored_as(done, optuna.trial.TrialState.FAIL, None)
