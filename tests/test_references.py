"""nas.space.references: the hand-designed networks, looked up by name, queued as warm starts (their baselines study:
tests/test_baselines.py)."""
import optuna
import pytest
from optuna.trial import TrialState

from nas.space import references
from nas.engine import study as study_mod
from nas.space.spec import Candidate

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_the_references_are_r1_r2_r4_in_file_order():
    refs = references.all_references()
    assert list(refs) == ["R1", "R2", "R4"]
    assert [refs[n].name.split()[0] for n in refs] == ["R1", "R2", "R4"]
    assert sorted(p.name for p in references.REFERENCE_DIR.glob("*.json")) == [
        "r1_lightmnist.json", "r2_residual_gap.json", "r4_progressive.json"]


def test_a_nameless_reference_is_labelled_by_its_file(tmp_path):
    candidate = references.by_name("R2")
    assert references.label(candidate, tmp_path / "r2_residual_gap.json") == "R2"
    nameless = Candidate(candidate.arch, candidate.recipe)
    assert references.label(nameless, tmp_path / "mine.json") == "mine"


@pytest.mark.parametrize("name, label", [("R1", "R1"), ("r2", "R2"), ("R4", "R4"), ("r2 residual+gap", "R2"),
                                         ("R1 LightMNIST", "R1")])
def test_by_name_takes_the_label_or_the_full_name_in_any_case(name, label):
    assert references.by_name(name) is references.all_references()[label]


@pytest.mark.parametrize("name", ["R3", "R", "", "LightMNIST", "R1 "])
def test_by_name_refuses_anything_else_and_lists_the_known_names(name):
    with pytest.raises(KeyError) as e:
        references.by_name(name)
    assert e.value.args[0] == f"unknown reference model {name!r}; known: R1, R2, R4"


def test_enqueue_queues_each_reference_once_as_the_next_trials():
    study = optuna.create_study(direction="maximize")
    assert study_mod.enqueue_references(study) == ["R1", "R2", "R4"]
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.user_attrs["reference"] for t in waiting] == ["R1", "R2", "R4"]
    assert study_mod.enqueue_references(study) == []  # a resumed search does not queue them again
    assert len(study.trials) == 3
    assert study.ask().user_attrs["reference"] == "R1"  # the queue comes before the sampler


def test_enqueue_skips_references_a_study_has_already_run():
    study = optuna.create_study(direction="maximize")
    done = study.ask()
    done.set_user_attr("reference", "R2")
    study.tell(done, 0.99)
    assert study_mod.enqueue_references(study) == ["R1", "R4"]
    assert [t.user_attrs.get("reference") for t in study.trials] == ["R2", "R1", "R4"]


