"""The Python API: nas.search on data in memory, in a folder and in a dataset object; its SearchResult; its typed
errors; and the command line giving the same study."""
import dataclasses
import importlib
import inspect
import pkgutil
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch
from PIL import Image

import nas
from nas import api, cli
from nas.deploy import export
from nas.config import SearchConfig
from tests.conftest import QUADRANT_CLASSES, ROOT, quadrant_images

TINY = dict(max_params=3_000, jobs=1, quiet=True, seed=3)  # a few seconds per search


def trial_rows(study: optuna.Study) -> list[tuple]:
    return [(t.number, t.state.name, t.user_attrs.get("params"), t.user_attrs.get("val_acc"))
            for t in study.get_trials()]


def test_a_search_on_arrays_gives_a_result_to_inspect_plot_and_export(tmp_path):
    x, y = quadrant_images(700, 0)
    result = nas.search((x, y), trials=2, results_dir=str(tmp_path), **TINY)
    assert isinstance(result.study, optuna.Study) and len(trial_rows(result.study)) >= 2
    best = result.best_trial
    assert best.user_attrs["val_acc"] == max(t.user_attrs["val_acc"] for t in result.study.get_trials()
                                             if t.state.name == "COMPLETE")
    assert isinstance(result.trials, pd.DataFrame) and len(result.trials) == len(result.study.get_trials())
    assert best.number in set(result.frontier["number"]) and "test_acc" in result.frontier
    assert isinstance(result.figure(), go.Figure)
    images = torch.from_numpy(x[:5, None]).float() / 255  # the loaded best takes [0, 1] images
    assert result.best(images).shape == (5, QUADRANT_CLASSES)
    written = result.export(tmp_path / "out" / "best.safetensors")
    assert [p.name for p in written] == ["best.safetensors", "best.json"]
    assert torch.equal(nas.load(written[0])(images), result.best(images))
    # the data in memory was saved once, named by its hash, and the study records it
    source = result.study.user_attrs["data_source"]
    assert source.startswith("npz:") and Path(source[4:]).parent == tmp_path / ".cache"


def test_in_memory_data_resumes_only_on_the_same_arrays(tmp_path):
    x, y = quadrant_images(700, 0)
    first = nas.search((x, y), trials=1, study="s", results_dir=str(tmp_path), **TINY)
    again = nas.search((x.copy(), y.copy()), trials=1, study="s", results_dir=str(tmp_path), **TINY)
    assert trial_rows(again.study) == trial_rows(first.study)  # the total was reached: nothing new
    y[0] = (y[0] + 1) % QUADRANT_CLASSES  # one label changed
    with pytest.raises(nas.StorageError, match="data_source"):
        nas.search((x, y), trials=1, study="s", results_dir=str(tmp_path), **TINY)


def test_a_search_on_a_folder_and_on_a_dataset_object(tmp_path):
    x, y = quadrant_images(240, 0)
    for i, (image, label) in enumerate(zip(x, y)):
        folder = tmp_path / "images" / "train" / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i}.png")
    on_folder = nas.search(str(tmp_path / "images"), trials=1, results_dir=str(tmp_path / "r"), **TINY)
    assert on_folder.study.user_attrs["data_source"] == f"folder:{tmp_path / 'images'}"

    class Pairs:  # a torchvision-style dataset: PIL images and int labels, and class names
        classes = [f"quadrant {i}" for i in range(QUADRANT_CLASSES)]

        def __len__(self):
            return len(x)

        def __getitem__(self, i):
            return Image.fromarray(x[i]), int(y[i])

    on_object = nas.search(Pairs(), trials=1, results_dir=str(tmp_path / "r"), **TINY)
    assert on_object.best.info.classes == tuple(Pairs.classes)
    assert on_object.best.info.shape == (1, 16, 16)


class _MixedSizes:
    """A dataset object whose images are not all one size."""

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return torch.zeros(1, 8 + i % 2, 8), i % 2


@pytest.mark.parametrize("data, error, message", [
    (_MixedSizes(), "DataError", "images have 2 shapes"),
    ((np.zeros((10, 8, 8), np.uint8), np.zeros(9)), "DataError", "x_train holds 10 images but y_train 9 labels"),
    ((np.zeros((10, 8, 8), np.uint8),), "DataError", "got tuple of 1 items"),
    ("no-such-set", "DataError", "not a dataset name"),
    (42, "DataError", "got int"),
])
def test_bad_data_raises_a_typed_error_with_a_one_line_message(tmp_path, data, error, message):
    with pytest.raises(getattr(nas, error), match=message) as e:
        nas.search(data, results_dir=str(tmp_path), **TINY)
    assert isinstance(e.value, nas.UserError) and "\n" not in str(e.value)


def test_other_bad_input_raises_typed_errors_and_never_exits(tmp_path):
    x, y = quadrant_images(300, 0)
    with pytest.raises(nas.SpaceError, match="not found"):
        nas.search((x, y), space=str(tmp_path / "none.toml"), results_dir=str(tmp_path))
    with pytest.raises(nas.SearchError, match="below the smallest network"):
        nas.search((x, y), max_params=10, results_dir=str(tmp_path))
    with pytest.raises(nas.StorageError, match="no storage"):
        nas.evaluate(study="none", results_dir=str(tmp_path))
    with pytest.raises(nas.SpecError, match="not a reference name"):
        nas.describe("R99")


def test_search_takes_every_setting_with_the_command_lines_names_and_defaults():
    parameters = inspect.signature(nas.search).parameters
    fields = {f.name: f.default for f in dataclasses.fields(SearchConfig)}
    assert set(parameters) == set(fields) - {"dataset"} | {"data"}
    assert parameters["data"].default == fields["dataset"]
    assert {name: p.default for name, p in parameters.items() if name != "data"} == {
        name: default for name, default in fields.items() if name != "dataset"}
    parsed = vars(cli.parse([]))  # the command line's own defaults agree
    assert {k: parsed[k] for k in ("trials", "max_params", "seed", "sampler", "epochs", "objective", "device")} == {
        k: fields[k] for k in ("trials", "max_params", "seed", "sampler", "epochs", "objective", "device")}


def test_every_public_name_resolves_and_says_what_it_is():
    for module in pkgutil.iter_modules(nas.__path__):  # a submodule of the same name would shadow a public name
        importlib.import_module(f"nas.{module.name}")
    assert nas.search is api.search and nas.load is api.load
    for name in nas.__all__:
        value = getattr(nas, name)
        assert inspect.getdoc(value), name
    assert "search" in dir(nas)
    with pytest.raises(AttributeError):
        nas.no_such_name  # noqa: B018


def test_describe_and_evaluate_from_python(tmp_path):
    assert "20,586 trainable parameters" in nas.describe("R1")
    x, y = quadrant_images(300, 0)
    small = export.read_spec_json((ROOT / "search_spaces" / "reference" / "r1_lightmnist.json").read_text(), "R1")[0]
    with pytest.raises(nas.DataError, match="takes"):  # R1 takes 28x28 images, not these 16x16 ones
        nas.evaluate(small, data=(x, y), seeds=1, results_dir=str(tmp_path), quiet=True)


def test_the_command_line_and_the_api_give_the_same_study_for_the_same_seed(tmp_path):
    x, y = quadrant_images(700, 0)
    arrays = tmp_path / "quadrants.npz"
    x_test, y_test = quadrant_images(200, 1)
    np.savez(arrays, x_train=x, y_train=y, x_test=x_test, y_test=y_test)
    common = ["--trials", "3", "--max-params", "3000", "--jobs", "1", "--seed", "3", "--quiet"]
    assert cli.main([*common, "--dataset", "npz", "--data-dir", str(arrays), "--results-dir", str(tmp_path / "cli")]) == 0
    from_cli = optuna.load_study(study_name="mnist-3000-npz-quadrants", storage=f"sqlite:///{tmp_path}/cli/nas.db")
    from_api = nas.search(str(arrays), trials=3, results_dir=str(tmp_path / "api"), **TINY).study
    assert from_api.study_name == from_cli.study_name
    assert trial_rows(from_api) == trial_rows(from_cli)


def test_the_installed_tinynas_command_is_search_py():
    tinynas = shutil.which("tinynas", path=str(Path(sys.executable).parent))
    assert tinynas, "tinynas is not installed beside this Python: pip install -e ."
    described = subprocess.run([tinynas, "describe", "R1"], capture_output=True, text=True, timeout=120)
    assert described.returncode == 0 and "20,586 trainable parameters" in described.stdout
    bad = subprocess.run([tinynas, "--trials", "0"], capture_output=True, text=True, timeout=120)
    assert (bad.returncode, bad.stderr) == (2, "error: argument --trials: --trials must be at least 1, got 0 (see "
                                               "--help)\n")
    usage = subprocess.run([tinynas, "--help"], capture_output=True, text=True, timeout=120)
    assert usage.stdout.startswith("usage: tinynas ")


INTERRUPTED_IN_PYTHON = """
import sys
import nas
from tests.conftest import quadrant_images

x, y = quadrant_images(3000, 0)
try:
    nas.search((x, y), trials=50, max_params=20_000, jobs=int(sys.argv[1]), results_dir=sys.argv[2])
except nas.Interrupted:
    print("raised Interrupted", flush=True)
"""


@pytest.mark.parametrize("jobs", [1, 2])
def test_an_interrupt_stops_a_search_from_python_and_keeps_its_finished_trials(tmp_path, jobs):
    """A notebook's interrupt is a SIGINT to its kernel: search() writes the reports, then raises Interrupted."""
    proc = subprocess.Popen([sys.executable, "-c", INTERRUPTED_IN_PYTHON, str(jobs), str(tmp_path)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:  # the first trained trial, then the interrupt
        lines.append(line)
        if line.lstrip("[w01] ").startswith("trial "):
            proc.send_signal(signal.SIGINT)
            break
    lines += proc.stdout.readlines()
    assert proc.wait(timeout=120) == 0, "".join(lines)
    assert lines[-1] == "raised Interrupted\n", "".join(lines)
    study = optuna.load_study(study_name=optuna.get_all_study_names(f"sqlite:///{tmp_path}/nas.db")[0],
                              storage=f"sqlite:///{tmp_path}/nas.db")
    assert any(t.state.name == "COMPLETE" for t in study.get_trials())
    assert not [t for t in study.get_trials() if t.state.name == "RUNNING"]
    assert any(p.name == "frontier.csv" for p in tmp_path.rglob("*"))
