"""Ctrl-C: stops training at once, waits out a storage write, and a second press stops anywhere."""
import os
import signal

import pytest

from nas.interrupts import CtrlC


def _press():
    os.kill(os.getpid(), signal.SIGINT)


@pytest.fixture
def ctrl_c():
    handler = CtrlC()
    before = signal.getsignal(signal.SIGINT)
    handler.install()
    yield handler
    handler.uninstall()
    assert signal.getsignal(signal.SIGINT) is before


def test_a_press_outside_training_waits_for_the_next_safe_point(ctrl_c):
    _press()  # e.g. inside a storage write: nothing is raised here
    assert ctrl_c.presses == 1
    with pytest.raises(KeyboardInterrupt):
        with ctrl_c.trial():
            pytest.fail("a new trial must not start after a press")


def test_a_press_during_training_stops_it_at_once(ctrl_c):
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with ctrl_c.training():
            _press()
            reached.append("after the press")
    assert not reached and not ctrl_c.is_training


def test_a_press_during_a_write_within_training_waits_until_the_write_is_done(ctrl_c):
    done = []
    with pytest.raises(KeyboardInterrupt):
        with ctrl_c.training():
            with ctrl_c.paused():
                _press()
                done.append("write finished")
            pytest.fail("training must not resume after a press")
    assert done == ["write finished"]


def test_a_second_press_stops_anywhere(ctrl_c):
    _press()
    with pytest.raises(KeyboardInterrupt):
        _press()
