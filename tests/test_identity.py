"""nas.search.identity: the identity a study records (settings, space fingerprint, data source, device ceilings), and
that a study resumes only with the one it was made with, older studies' missing labels taken as assumed."""
import hashlib
import json

from nas import data
from nas.config import SearchConfig
from nas.search.ceilings import Ceilings
from nas.search.identity import ASSUMED_IDENTITY, ceiling_identity, recorded_identity, space_fingerprint, study_identity
from nas.space.space_file import DEFAULT_SPACE, load_space


def test_a_study_made_before_a_label_existed_is_taken_as_made_with_the_assumed_value():
    assert recorded_identity({"dataset": "fashion-mnist", "epochs": 2}) == {
        "val_size": data.LEGACY_VAL_SIZE, "max_peak_kb": None, "int8_memory": False, "max_latency_ms": None,
        "max_arena_kb": None, "max_flash_kb": None, "dataset": "fashion-mnist", "epochs": 2}
    assert recorded_identity({"val_size": 10_000})["val_size"] == 10_000
    assert recorded_identity({}) == {}  # no labels at all: not a search's study, so nothing is assumed


def test_the_identity_records_data_budget_and_space():
    space = load_space()
    identity = study_identity(SearchConfig(max_params=9000, train_subset=100), space)
    assert list(identity)[0] == "val_size"
    assert identity["max_params"] == 9000 and identity["train_subset"] == 100 and identity["space"] == "mnist"


def test_studies_of_space_files_without_newer_keys_still_resume(tmp_path):
    """The fingerprint a study was made with must not change because the file lacks a key added since."""
    text = "\n".join(line for line in DEFAULT_SPACE.read_text().splitlines() if not line.startswith("pool_placement"))
    (tmp_path / "old.toml").write_text(text)
    old = load_space(tmp_path / "old.toml")
    before_the_key = {k: v for k, v in old.arch.items() if k != "pool_placement"}  # what the study recorded
    recorded = hashlib.sha256(json.dumps({"arch": before_the_key, "recipe": old.recipe, "max_mflops": old.max_mflops},
                                         sort_keys=True, default=str).encode()).hexdigest()[:12]
    assert space_fingerprint(old) == recorded
    assert space_fingerprint(load_space()) != recorded  # an explicit non-default value is a different space


def test_the_identity_records_the_data_source_so_a_study_resumed_with_other_data_is_refused(tmp_path):
    import optuna
    import pytest

    from nas.search import study as study_mod
    from nas.errors import StorageError

    space = load_space()
    identity = study_identity(SearchConfig(dataset="folder", data_dir=str(tmp_path / "a"), image_size=16), space)
    assert identity["data_source"] == f"folder:{(tmp_path / 'a').resolve()}" and identity["image_size"] == 16
    assert study_identity(SearchConfig(), space)["data_source"] == "mnist"
    assert SearchConfig(dataset="npz", data_dir="/d/leaves.npz", image_size=32).study_name(space) == \
        "mnist-25000-npz-leaves-32px"
    storage = f"sqlite:///{tmp_path}/s.db"
    study_mod.create_or_resume(storage, "s", identity, optuna.samplers.RandomSampler())
    other = study_identity(SearchConfig(dataset="folder", data_dir=str(tmp_path / "b"), image_size=16), space)
    with pytest.raises(StorageError, match="was made with data_source='folder:.*a', not 'folder:.*b'"):
        study_mod.create_or_resume(storage, "s", other, optuna.samplers.RandomSampler())
    resized = study_identity(SearchConfig(dataset="folder", data_dir=str(tmp_path / "a"), image_size=24), space)
    with pytest.raises(StorageError, match="image_size=16, not 24"):
        study_mod.create_or_resume(storage, "s", resized, optuna.samplers.RandomSampler())


def test_a_study_made_before_the_data_source_was_recorded_still_resumes(tmp_path):
    import optuna

    from nas.search import study as study_mod

    space = load_space()
    storage = f"sqlite:///{tmp_path}/s.db"
    before = {k: v for k, v in study_identity(SearchConfig(), space).items() if k not in ("data_source", "image_size")}
    study_mod.create_or_resume(storage, "old", before, optuna.samplers.RandomSampler())
    resumed = study_mod.create_or_resume(storage, "old", study_identity(SearchConfig(), space),
                                         optuna.samplers.RandomSampler())
    assert resumed.user_attrs["data_source"] == "mnist" and resumed.user_attrs["image_size"] is None


def test_a_study_resumes_only_under_the_same_ceilings_and_older_studies_still_resume(tmp_path):
    import optuna
    import pytest

    from nas.search import study as study_mod
    from nas.errors import StorageError

    space = load_space()
    storage = f"sqlite:///{tmp_path}/s.db"
    identity = study_identity(SearchConfig(max_peak_kb=64), space)
    assert (identity["max_mflops"], identity["max_peak_kb"], identity["int8_memory"], identity["max_latency_ms"]) == (
        8.0, 64, False, None)  # the effective ceilings: the space's max_mflops unless --max-mflops says otherwise
    study_mod.create_or_resume(storage, "s", identity, optuna.samplers.RandomSampler())
    with pytest.raises(StorageError, match="max_peak_kb=64, not None"):
        study_mod.create_or_resume(storage, "s", study_identity(SearchConfig(), space), optuna.samplers.RandomSampler())
    ceilings = ("max_mflops", "max_peak_kb", "int8_memory", "max_latency_ms")
    before = {k: v for k, v in study_identity(SearchConfig(), space).items() if k not in ceilings}
    study_mod.create_or_resume(storage, "old", before, optuna.samplers.RandomSampler())
    with pytest.raises(StorageError, match="max_peak_kb=None, not 64"):  # its trials met no memory ceiling
        study_mod.create_or_resume(storage, "old", identity, optuna.samplers.RandomSampler(), ASSUMED_IDENTITY)
    resumed = study_mod.create_or_resume(storage, "old", study_identity(SearchConfig(), space),
                                         optuna.samplers.RandomSampler(), ASSUMED_IDENTITY)
    assert resumed.user_attrs["max_mflops"] == 8.0 and resumed.user_attrs.get("max_peak_kb") is None


def test_each_device_ceiling_has_its_own_label_and_the_param_budget_none():
    labels = ceiling_identity(Ceilings(25_000, mflops=4.0, peak_kb=64, int8=True, latency_ms=0.5, arena_kb=48,
                                       flash_kb=96))
    assert labels == {"max_mflops": 4.0, "max_peak_kb": 64, "int8_memory": True, "max_latency_ms": 0.5,
                      "max_arena_kb": 48, "max_flash_kb": 96}
    assert set(ASSUMED_IDENTITY) - {"val_size"} <= set(labels)  # older studies are assumed to have met none


def test_only_the_pareto_mode_labels_its_objective_and_size_metric():
    space = load_space()
    assert not {"objective", "size_metric"} & set(study_identity(SearchConfig(), space))  # as they were before it
    pareto = study_identity(SearchConfig(objective="pareto"), space)
    assert (pareto["objective"], pareto["size_metric"]) == ("pareto", "params")
    assert study_identity(SearchConfig(objective="pareto", size_metric="mflops"), space)["size_metric"] == "mflops"
