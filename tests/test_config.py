"""Settings and study names (the identity a study records: tests/test_identity.py)."""
import subprocess
import sys

from nas.config import SearchConfig, config_from
from nas.space.space_file import load_space
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


def test_each_device_ceiling_given_names_its_own_study():
    space = load_space()
    assert SearchConfig(max_mflops=4).study_name(space) == "mnist-25000-mflops4"
    assert SearchConfig(max_peak_kb=64).study_name(space) == "mnist-25000-kb64"
    assert SearchConfig(max_peak_kb=64, int8_memory=True).study_name(space) == "mnist-25000-int8kb64"
    assert SearchConfig(int8_memory=True).study_name(space) == "mnist-25000-int8"  # its peak_kb figures differ
    assert SearchConfig(max_latency_ms=0.5, max_mflops=2.5, epochs=2).study_name(space) == \
        "mnist-25000-mflops2.5-lat0.5ms-e2"


def test_settings_load_neither_torch_nor_optuna():
    """The command line reads its defaults and choices from nas.config, so a bad flag fails before torch loads."""
    shown = subprocess.run([sys.executable, "-X", "importtime", "-c", "import nas.config, nas.cli"],
                           capture_output=True, text=True, cwd=ROOT, timeout=60)
    imported = {line.split("|")[-1].strip().split(".")[0] for line in shown.stderr.splitlines() if "|" in line}
    assert "nas" in imported and not imported & {"torch", "optuna", "numpy", "pandas"}
