"""Opening the storage, hiding passwords, heartbeats, and re-queueing the trials of dead workers."""
import time

import optuna
import pytest
from optuna.trial import TrialState

from nas import storage as storage_mod
from nas.errors import StudyError
from nas.storage import fail_stale_trials, heartbeat_settings, open_storage, redact, sqlalchemy_url


@pytest.mark.parametrize("url, shown", [
    ("postgresql://nas:s3cret@db.example:5432/nas", "postgresql://nas:***@db.example:5432/nas"),
    ("postgresql+psycopg://nas:p%40ss@h/db", "postgresql+psycopg://nas:***@h/db"),
    ("sqlite:///results/nas.db", "sqlite:///results/nas.db"),
    ("postgresql://u:pw@h:notaport/db", "postgresql://***"),
])
def test_passwords_never_reach_a_message(url, shown):
    assert redact(url) == shown


def test_postgresql_urls_name_the_psycopg_3_driver():
    assert sqlalchemy_url("postgresql://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert sqlalchemy_url("postgres://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert sqlalchemy_url("sqlite:///x.db") == "sqlite:///x.db"


def test_heartbeat_periods_default_and_follow_the_environment(monkeypatch):
    monkeypatch.delenv(storage_mod.HEARTBEAT_ENV, raising=False)
    monkeypatch.delenv(storage_mod.GRACE_ENV, raising=False)
    assert heartbeat_settings() == (15, 60)
    monkeypatch.setenv(storage_mod.HEARTBEAT_ENV, "2")
    assert heartbeat_settings() == (2, 8)
    monkeypatch.setenv(storage_mod.GRACE_ENV, "2")
    with pytest.raises(StudyError, match="longer than the heartbeat"):
        heartbeat_settings()
    monkeypatch.setenv(storage_mod.HEARTBEAT_ENV, "soon")
    with pytest.raises(StudyError, match="NAS_HEARTBEAT_SECONDS"):
        heartbeat_settings()


def test_an_unusable_storage_is_one_error_without_the_password():
    with pytest.raises(StudyError) as caught:
        open_storage("postgresql://u:hunter2@127.0.0.1:1/db")
    assert "cannot open storage" in str(caught.value) and "hunter2" not in str(caught.value)


def test_a_trial_that_never_beat_is_failed_and_requeued(tmp_path, monkeypatch):
    """A worker killed between creating a trial and its first heartbeat: two sweeps a grace period apart clean it."""
    monkeypatch.setenv(storage_mod.HEARTBEAT_ENV, "1")
    monkeypatch.setenv(storage_mod.GRACE_ENV, "2")
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 'hb.db'}"), study_name="hb")
    study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})  # RUNNING, and no heartbeat ever recorded
    time.sleep(2.5)
    fail_stale_trials(study)  # Optuna alone skips it; our sweep gives it its first beat
    assert study.trials[0].state == TrialState.RUNNING
    time.sleep(3.5)  # SQLite's now() has one-second resolution: leave a whole second over the 2 s grace
    fail_stale_trials(study)
    states = [t.state for t in study.trials]
    assert states[0] == TrialState.FAIL and TrialState.WAITING in states[1:]
