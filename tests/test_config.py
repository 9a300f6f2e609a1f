"""Settings, study names and the identity a study records."""
import hashlib
import json
import subprocess
import sys

from nas import data
from nas.config import SearchConfig, config_from
from nas.search.identity import ASSUMED_IDENTITY, recorded_identity, space_fingerprint, study_identity
from nas.space.space_file import DEFAULT_SPACE, load_space
from tests.conftest import ROOT


def test_the_default_study_name_says_what_differs_from_the_defaults():
    space = load_space()
    assert SearchConfig().study_name(space) == "mnist-25000"
    assert SearchConfig(max_params=5000, dataset="fashion-mnist", epochs=3, train_subset=500).study_name(space) == \
        "mnist-5000-fashion-mnist-e3-sub500"
    assert SearchConfig(study="mine", max_params=5000).study_name(space) == "mine"


def test_paths_follow_the_results_folder_unless_told_otherwise():
    config = SearchConfig(results_dir="out")
    assert config.storage_url == "sqlite:///out/nas.db"
    assert str(config.artifacts("s")) == "out/s/artifacts"
    assert str(SearchConfig(artifact_dir="/art").artifacts("s")) == "/art"
    assert SearchConfig(storage="postgresql://h/db").storage_url == "postgresql://h/db"


def test_settings_are_taken_from_parsed_arguments_and_the_rest_ignored():
    config = config_from({"trials": 7, "max_params": 9000, "command": "search", "out": "x.safetensors"})
    assert (config.trials, config.max_params, config.seed) == (7, 9000, 0)


def test_a_setting_given_as_none_is_a_flag_left_out_and_keeps_its_default():
    config = config_from({"dataset": None, "epochs": None, "train_subset": None, "trials": 7})
    assert (config.dataset, config.epochs, config.train_subset, config.trials) == ("mnist", 1, None, 7)


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


def test_each_device_ceiling_given_names_its_own_study():
    space = load_space()
    assert SearchConfig(max_mflops=4).study_name(space) == "mnist-25000-mflops4"
    assert SearchConfig(max_peak_kb=64).study_name(space) == "mnist-25000-kb64"
    assert SearchConfig(max_peak_kb=64, int8_memory=True).study_name(space) == "mnist-25000-int8kb64"
    assert SearchConfig(int8_memory=True).study_name(space) == "mnist-25000-int8"  # its peak_kb figures differ
    assert SearchConfig(max_latency_ms=0.5, max_mflops=2.5, epochs=2).study_name(space) == \
        "mnist-25000-mflops2.5-lat0.5ms-e2"


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


def test_settings_load_neither_torch_nor_optuna():
    """The command line reads its defaults and choices from nas.config, so a bad flag fails before torch loads."""
    shown = subprocess.run([sys.executable, "-X", "importtime", "-c", "import nas.config, nas.cli"],
                           capture_output=True, text=True, cwd=ROOT, timeout=60)
    imported = {line.split("|")[-1].strip().split(".")[0] for line in shown.stderr.splitlines() if "|" in line}
    assert "nas" in imported and not imported & {"torch", "optuna", "numpy", "pandas"}
