"""nas.results.baselines: the reference networks' baselines study, read back as report rows scored like a study's."""
import optuna

from nas.results import baselines
from nas.space import references
from nas.space.budget import count_params
from nas.data import VAL_SIZE

OTHER_VAL_SIZE = 5000

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _baseline(study, name, val_size, train_subset, acc):
    trial = study.ask()
    trial.set_user_attr("reference", name)
    trial.set_user_attr("params", count_params(references.by_name(name).arch))
    trial.set_user_attr("val_size", val_size)
    trial.set_user_attr("train_subset", train_subset)
    trial.set_user_attr("val_acc", acc)
    study.tell(trial, acc)


def test_baseline_frame_keeps_only_baselines_scored_like_the_study():
    storage = optuna.storages.InMemoryStorage()
    assert baselines.baseline_frame(storage, "mnist", VAL_SIZE, 1000) is None
    study = optuna.create_study(study_name=baselines.baselines_study_name("mnist"), storage=storage,
                                direction="maximize")
    assert study.study_name == "baselines-mnist"
    _baseline(study, "R1", VAL_SIZE, 1000, 0.97)
    _baseline(study, "R2", VAL_SIZE, 1000, 0.96)
    _baseline(study, "R4", VAL_SIZE, None, 0.99)  # trained on the full set
    _baseline(study, "R1", OTHER_VAL_SIZE, 1000, 0.98)  # another hold-out

    frame = baselines.baseline_frame(storage, "mnist", VAL_SIZE, 1000)
    assert frame[["reference", "params", "val_acc"]].values.tolist() == [["R1", 20_586, 0.97], ["R2", 8_530, 0.96]]
    assert baselines.baseline_frame(storage, "mnist", VAL_SIZE, None)["reference"].tolist() == ["R4"]
    assert baselines.baseline_frame(storage, "mnist", OTHER_VAL_SIZE, 1000)["number"].tolist() == [3]
    assert baselines.baseline_frame(storage, "mnist", VAL_SIZE, 500).empty
    assert baselines.baseline_frame(storage, "fashion-mnist", VAL_SIZE, 1000) is None  # another dataset's study
