"""SIGINT and SIGTERM: stop training at once, wait out a storage write, a second signal stops anywhere, and a worker
acts on its parent's signals only."""
import os
import signal
import threading
import time

import pytest

from nas.engine.interrupts import CtrlC, STOP_SIGNALS, shielded


def _press(signum=signal.SIGINT):
    os.kill(os.getpid(), signum)


@pytest.fixture
def guarded():
    """Signals that CtrlC fails to handle fail the test, rather than stop pytest."""
    def unhandled(signum, frame):
        pytest.fail(f"{signal.Signals(signum).name} was not handled")

    before = {s: signal.signal(s, unhandled) for s in STOP_SIGNALS}
    yield unhandled
    for s, handler in before.items():
        signal.signal(s, handler)


@pytest.fixture
def ctrl_c(guarded):
    handler = CtrlC()
    handler.install()
    yield handler
    handler.uninstall()
    assert all(signal.getsignal(s) is guarded for s in STOP_SIGNALS)


@pytest.mark.parametrize("signum", STOP_SIGNALS, ids=lambda s: s.name)
def test_a_signal_outside_training_waits_for_the_next_safe_point(ctrl_c, signum):
    _press(signum)  # e.g. inside a storage write: nothing is raised here
    assert ctrl_c.presses == 1
    with pytest.raises(KeyboardInterrupt) as e:
        with ctrl_c.trial():
            pytest.fail("a new trial must not start after a signal")
    assert e.value.signum == signum  # the exit code is 128 + signum


@pytest.mark.parametrize("signum", STOP_SIGNALS, ids=lambda s: s.name)
def test_a_signal_during_training_stops_it_at_once(ctrl_c, signum):
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with ctrl_c.stoppable():
            _press(signum)
            reached.append("after the signal")
    assert not reached and not ctrl_c.is_stoppable


def test_a_press_during_a_write_within_training_waits_until_the_write_is_done(ctrl_c):
    done = []
    with pytest.raises(KeyboardInterrupt):
        with ctrl_c.stoppable():
            with ctrl_c.paused():
                _press()
                done.append("write finished")
            pytest.fail("training must not resume after a press")
    assert done == ["write finished"]


def test_a_second_signal_stops_anywhere_and_the_first_one_names_the_stop(ctrl_c):
    _press(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt) as e:
        _press(signal.SIGINT)
    assert e.value.signum == signal.SIGTERM


@pytest.fixture
def worker(guarded):
    handler = CtrlC()
    handler.install(relayed=True)
    yield handler
    handler.uninstall()


def _relay_soon(handler, presses):
    threading.Timer(0.05, handler.relay, args=(presses,)).start()


def test_a_worker_stops_training_at_once_when_its_parent_is_signalled(worker):
    with pytest.raises(KeyboardInterrupt):
        with worker.stoppable():
            _relay_soon(worker, 1)  # from the worker's watch thread
            time.sleep(5)
            pytest.fail("training went on")


def test_a_worker_waits_out_a_write_then_stops_at_once_on_the_parents_second_signal(worker):
    _relay_soon(worker, 1)
    time.sleep(0.2)  # a storage write, say: nothing is raised
    assert worker.presses == 1
    with pytest.raises(KeyboardInterrupt):
        _relay_soon(worker, 2)
        time.sleep(5)
        pytest.fail("a second signal must stop at once")


def test_a_worker_process_ignores_sigint_and_sigterm_before_its_entry_is_imported(guarded):
    """A terminal's Ctrl-C reaches the whole process group: in a worker, only the parent's relay may count."""
    seen = []
    try:
        shielded("tests.test_interrupts", "_record_handlers", seen)
    finally:
        for s in STOP_SIGNALS:
            signal.signal(s, guarded)
    assert seen == [signal.SIG_IGN, signal.SIG_IGN]


def _record_handlers(seen):
    seen.extend(signal.getsignal(s) for s in STOP_SIGNALS)
