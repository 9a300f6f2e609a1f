"""nas.commands in-process: describe, report, export, evaluate and baselines, on a storage made here and on the
synthetic toy task instead of MNIST."""
import errno
import json
import os
import stat
import statistics
from pathlib import Path
from unittest.mock import ANY

import optuna
import pandas as pd
import pytest
import torch
from optuna.trial import TrialState
from safetensors.torch import load_file

from nas.results import baselines
from nas import cli, commands, data as data_mod, network_card
from nas.deploy import export
from nas.space import references, tflite_graph, tflm_budget
from nas.space.budget import count_flops, count_params, peak_activation_bytes
from nas.space.build import build
from nas.config import SearchConfig
from nas.engine.identity import study_identity
from nas.data import DataInfo
from nas.data import to_device
from nas.errors import CliError
from nas.engine.objective import record_candidate, record_result
from nas.space.space_file import load_space
from nas.space.spec import Candidate, SpecError
from nas.engine.train import TrainingDiverged, TrainResult, evaluate
from tests.conftest import REFERENCES, synthetic_splits, torchvision_info

optuna.logging.set_verbosity(optuna.logging.WARNING)
REFERENCE_FILES = sorted(references.REFERENCE_DIR.glob("*.json"))


def run(*argv) -> int:
    return commands.dispatch(cli.parse([str(a) for a in argv]))


def size(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def made_up_result(acc: float) -> TrainResult:
    return TrainResult(val_acc=acc, test_acc=acc - 0.01, train_seconds=1.0, eval_seconds=0.1, steps=1, final_loss=0.1)


SCORES = {"R1": 0.97, "R2": 0.99, "R4": 0.98}  # trial numbers 0, 1, 2; R2 is the best


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A storage as a search leaves it: study "s" of R1, R2 and R4 with made-up scores and untrained weights (built
    with seed = trial number, so each trial's weights differ), then a failed trial; no result files yet."""
    return _store(tmp_path_factory.mktemp("results"), "s")


def _store(results, name: str, identity: dict | None = None, dataset: str = "mnist"):
    """Study `name` as `stored` describes, labelled with `identity` as a search labels its study, its weights
    recording `dataset`."""
    config = SearchConfig(results_dir=str(results), study=name)
    study = optuna.create_study(study_name=name, storage=config.storage_url, direction="maximize")
    for key, value in (identity or {}).items():
        study.set_user_attr(key, value)
    store = export.artifact_store(config.artifacts(name))
    for number, (ref, acc) in enumerate(SCORES.items()):
        candidate, trial = REFERENCES[ref], study.ask()
        record_candidate(trial, candidate, count_params(candidate.arch))
        record_result(trial, made_up_result(acc), build(candidate.arch, seed=number), candidate, store, results / "tmp",
                      torchvision_info(dataset))
        study.tell(trial, acc)
    study.tell(study.ask(), state=TrialState.FAIL)
    return results


# -- describe -------------------------------------------------------------------------------------------------
def _table(out: str) -> tuple[list[str], list[list[str]]]:
    """The lines from the title to the recipe (the data's lines follow it), and the table's rows split into words."""
    lines = out.splitlines()
    total = next(i for i, line in enumerate(lines) if line.startswith("total: "))
    return lines[:total + 4], [line.split() for line in lines[2:total]]


@pytest.mark.parametrize("path", REFERENCE_FILES, ids=[p.stem for p in REFERENCE_FILES])
def test_describe_prints_a_row_per_block_adding_up_to_the_exact_total(path, capsys):
    candidate = Candidate.from_json(path.read_text())
    assert run("describe", path) == 0
    lines, rows = _table(capsys.readouterr().out)
    total = count_params(candidate.arch)
    assert lines[0] == f"{candidate.name}  (id {candidate.id})"
    assert [r[0] for r in rows] == ["input"] + [f"blocks[{i}]" for i in range(len(candidate.arch.blocks))]
    assert rows[0][-4:] == ["(1,", "28,", "28)", "3,136"] and rows[-1][-4:] == ["(10,)", rows[-1][-3], rows[-1][-2], "40"]
    number = lambda text: float(text.replace(",", ""))  # noqa: E731
    assert sum(number(r[-3]) for r in rows[1:]) == total
    flops = count_flops(candidate.arch)
    assert abs(sum(number(r[-2]) for r in rows[1:]) - flops / 1e6) < 0.001 * len(rows)
    acts = sum(number(r[-1]) for r in rows)
    assert lines[-4] == f"total: {total:,} trainable parameters, {flops / 1e6:.3f} MFLOPs per image, {acts:,.0f} activation bytes in all"
    peak = peak_activation_bytes(candidate.arch)
    assert lines[-3].startswith(f"peak activation memory at batch 1: {peak:,} bytes at fp32 ({peak / 1024:.1f} KB), "
                                f"{peak // 4:,} at int8")
    arena, flash = tflm_budget.arena(candidate.arch), tflm_budget.flash_bytes(candidate.arch)
    assert lines[-2].startswith(f"on a microcontroller (int8, TFLM), predicted: arena {arena.total:,} bytes "
                                f"({arena.head:,} activations + {arena.tail:,} persistent), flash {flash:,} bytes")
    assert lines[-2].endswith("which it uses") == bool(tflite_graph.unsupported_layers(candidate.arch))  # R4: GELU
    assert json.loads(lines[-1].removeprefix("recipe: ")) == candidate.recipe.to_dict()


def test_describe_shows_each_block_its_output_shape_and_its_own_parameters(capsys):
    network_card.describe(str(references.REFERENCE_DIR / "r2_residual_gap.json"))
    lines, rows = _table(capsys.readouterr().out)
    residual = next(line for line in lines if line.startswith("blocks[3]"))
    assert residual.split()[1:-2] == ["residual(2", "body,", "1", "shortcut)", "(24,", "14,", "14)", "4,560"]
    assert residual.split()[-1] == f"{24 * 14 * 14 * 4:,}"
    pool = next(line for line in lines if line.startswith("blocks[4]"))
    assert pool.split()[1:] == ["pool(op=max,", "k=2,", "ceil=True)", "(24,", "7,", "7)", "0", "0.000", f"{24 * 7 * 7 * 4:,}"]
    assert lines[-4].startswith("total: 8,530 trainable parameters, ")


def test_describe_prints_the_data_the_input_shape_the_normalisation_and_the_classes(tmp_path, capsys):
    info = DataInfo("folder:/data/leaves", (3, 16, 16), ("oak", "ash", "elm"), (0.51234, 0.4, 0.3), (0.2, 0.21, 0.22))
    candidate = load_space().sample(optuna.trial.FixedTrial(dict(stem_convs=1, pools=2, block="conv", head="gap",
                                                                 width_growth=1.2, budget_fill=0.5, sgd_lr=0.1,
                                                                 warmup=0.3, weight_decay=1e-4, label_smoothing=0.1,
                                                                 ema=0.0)),
                                    25_000, info.shape, len(info.classes))
    export.save(build(candidate.arch), candidate, tmp_path / "leaves.safetensors", info)
    for path in ("leaves.safetensors", "leaves.json"):
        assert run("describe", tmp_path / path) == 0
        out = capsys.readouterr().out
        lines, rows = _table(out)
        assert rows[0][-4:] == ["(3,", "16,", "16)", f"{3 * 16 * 16 * 4:,}"] and rows[-1][-4] == "(3,)"
        assert out.splitlines()[len(lines):] == [
            "data: folder:/data/leaves",
            "input: (3, 16, 16) scaled to [0, 1], normalised per channel by mean (0.5123, 0.4, 0.3) and std "
            "(0.2, 0.21, 0.22)",
            "classes (3): oak, ash, elm"]
    assert run("describe", "R1") == 0
    assert capsys.readouterr().out.splitlines()[-1] == ("data: not recorded; input (1, 28, 28) normalised as in "
                                                        "training, 10 classes")


def test_describe_of_a_nameless_weights_file_is_titled_by_the_file(tmp_path, capsys):
    candidate = Candidate(REFERENCES["R2"].arch, REFERENCES["R2"].recipe)
    export.save(build(candidate.arch), candidate, tmp_path / "mine.safetensors")
    network_card.describe(str(tmp_path / "mine.safetensors"))
    assert capsys.readouterr().out.splitlines()[0] == f"mine.safetensors  (id {candidate.id})"


# -- spec_from --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ref, name", [("R1", "R1"), ("r4", "R4"), ("R2 Residual+GAP", "R2")])
def test_spec_from_a_reference_name(ref, name):
    assert network_card.spec_from(ref)[0] == REFERENCES[name]


@pytest.mark.parametrize("path", REFERENCE_FILES, ids=[p.stem for p in REFERENCE_FILES])
def test_spec_from_a_json_file(path):
    assert network_card.spec_from(str(path))[0] == Candidate.from_json(path.read_text())


def test_spec_from_a_weights_file_reads_the_spec_inside_it(tmp_path):
    path = tmp_path / "w.safetensors"
    export.save(build(REFERENCES["R4"].arch), REFERENCES["R4"], path)
    path.with_suffix(".json").unlink()
    assert network_card.spec_from(str(path))[0] == REFERENCES["R4"]


def test_spec_from_a_file_named_like_a_reference_reads_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "R1").write_text(REFERENCES["R2"].to_json())
    assert network_card.spec_from("R1")[0] == REFERENCES["R2"]


@pytest.mark.parametrize("ref", ["R9", "nope.json", "search_spaces"])
def test_spec_from_anything_else_names_it_and_the_references(ref):
    with pytest.raises(SpecError) as e:
        network_card.spec_from(ref)
    assert str(e.value) == f"{ref}: no such file, and not a reference name (R1, R2, R4)"


# -- dispatch ----------------------------------------------------------------------------------------------
COMMAND_ARGS = {"report": ["--study", "s"], "export": ["--study", "s", "--out", "x.safetensors"],
                "evaluate": ["--spec", "R1"], "baselines": []}


@pytest.mark.parametrize("command", sorted(COMMAND_ARGS))
def test_dispatch_runs_the_named_command_with_its_settings_and_threads(command, monkeypatch):
    calls, threads = [], []
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    for name in COMMAND_ARGS:
        monkeypatch.setattr(commands, f"cmd_{name}", lambda config, args, name=name: calls.append((name, config)) or 7)
    assert run(command, *COMMAND_ARGS[command], "--seed", 5, "--dataset", "fashion-mnist", "--threads", 2) == 7
    assert [(name, config.seed, config.dataset) for name, config in calls] == [(command, 5, "fashion-mnist")]
    assert threads == [2]


def test_the_search_command_is_the_api_search_with_the_same_settings(monkeypatch):
    from nas import api

    calls = []
    monkeypatch.setattr(api, "search", lambda data, **options: calls.append((data, options)))
    assert cli.main(["--seed", "5", "--dataset", "fashion-mnist", "--trials", "3", "--jobs", "2"]) == 0
    (data, options), = calls
    assert data == "fashion-mnist" and (options["seed"], options["trials"], options["jobs"]) == (5, 3, 2)
    assert options["max_params"] == 25_000 and options["data_dir"] is None


# -- report and export ---------------------------------------------------------------------------------------
def test_report_writes_the_result_files_from_the_storage_and_lists_them(stored, mnist, capsys):
    assert run("report", "--study", "s", "--results-dir", stored) == 0
    lines = capsys.readouterr().out.splitlines()
    checked = [line for line in lines if line.startswith("onnxruntime vs PyTorch on 1,000 test images: ")]
    assert len(checked) == 1  # best.onnx, checked against its weights
    listed = dict(line.strip().split(": ") for line in lines if line not in checked)
    out_dir = stored / "s"
    assert listed == {"trials": str(out_dir / "trials.csv"), "frontier": str(out_dir / "frontier.csv"),
                      "html": str(out_dir / "frontier.html"), "best": str(out_dir / "best.safetensors"),
                      "onnx": str(out_dir / "best.onnx")}
    trials = pd.read_csv(out_dir / "trials.csv")
    assert trials["state"].tolist() == ["COMPLETE"] * 3 + ["FAIL"]
    assert pd.read_csv(out_dir / "frontier.csv")["number"].tolist() == [1]  # R2: smallest and most accurate
    assert export.read_spec(out_dir / "best.safetensors")[0] == REFERENCES["R2"]
    # test accuracy for the frontier's one network alone, scored on MNIST's test set from its stored weights
    assert "test_acc" not in trials.columns
    assert pd.read_csv(out_dir / "frontier.csv")["test_acc"].tolist() == [pytest.approx(evaluate(
        export.load(out_dir / "best.safetensors"), mnist.x_test.float() / 255, mnist.y_test), abs=2e-4)]


@pytest.mark.parametrize("trial, name", [(None, "R2"), (0, "R1"), (2, "R4")], ids=["best", "trial-0", "trial-2"])
def test_export_copies_the_chosen_trial_else_the_best(stored, tmp_path, capsys, trial, name):
    out = tmp_path / "sub" / "m.safetensors"
    chosen = [] if trial is None else ["--trial", trial]
    assert run("export", "--study", "s", *chosen, "--results-dir", stored, "--out", out) == 0
    number, candidate = list(SCORES).index(name), REFERENCES[name]
    assert capsys.readouterr().out == (f"trial {number} ({count_params(candidate.arch):,} params, val "
                                       f"{SCORES[name]:.2%}) -> {out} and {out.with_suffix('.json')}\n")
    assert export.read_spec(out) == (candidate, torchvision_info("mnist"))
    assert export.read_spec_json(out.with_suffix(".json").read_text(), "m.json") == export.read_spec(out)
    weights, expected = load_file(out), build(candidate.arch, seed=number).state_dict()
    assert weights.keys() == expected.keys() and all(torch.equal(weights[k], expected[k]) for k in expected)


@pytest.mark.parametrize("out, form", [("m.json", []), ("m.safetensors", ["--format", "onnx"]),
                                       ("m.JSON", ["--format", "onnx-int8"])])
def test_export_refuses_an_out_that_a_file_written_beside_it_would_replace(stored, tmp_path, capsys, out, form):
    argv = ["export", "--study", "s", "--results-dir", stored, "--out", tmp_path / out, *form]
    assert cli.main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {tmp_path / out}: the ") and "goes beside the" in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_report_and_export_write_files_readable_as_the_umask_allows(stored, tmp_path, umask_022):
    assert run("report", "--study", "s", "--results-dir", stored) == 0
    assert run("export", "--study", "s", "--results-dir", stored, "--out", tmp_path / "m.safetensors") == 0
    written = [stored / "s" / name for name in ("trials.csv", "frontier.csv", "frontier.html", "best.safetensors",
                                                "best.json")] + [tmp_path / "m.safetensors", tmp_path / "m.json"]
    assert {path.name: _mode(path) for path in written} == {path.name: 0o644 for path in written}


def _half_then_full(path) -> None:
    Path.write_bytes(Path(path), b"half")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("command", ["report", "export"])
def test_a_full_disk_is_one_line_naming_the_file_and_keeps_the_old_one(stored, tmp_path, monkeypatch, capsys, command):
    """The write of trials.csv (report) or of the exported weights (export) fails half-way with ENOSPC."""
    if command == "report":
        target, extra, write_text = stored / "s" / "trials.csv", [], Path.write_text
        # in the results folder: the report's test scores export the frontier's weights to a temporary folder first
        monkeypatch.setattr(Path, "write_text", lambda self, text, *a, **k: _half_then_full(self)
                            if stored in self.parents else write_text(self, text, *a, **k))
    else:
        target, extra = tmp_path / "m.safetensors", ["--out", str(tmp_path / "m.safetensors")]
        monkeypatch.setattr(optuna.artifacts, "download_artifact", lambda **k: _half_then_full(k["file_path"]))
    Path.write_bytes(target, b"old")
    before = sorted(p.name for p in target.parent.iterdir())
    assert cli.main([command, "--study", "s", "--results-dir", str(stored), *extra]) == 2
    assert capsys.readouterr().err == f"error: {target}: No space left on device\n"
    assert target.read_bytes() == b"old" and sorted(p.name for p in target.parent.iterdir()) == before


# -- evaluate ----------------------------------------------------------------------------------------------
@pytest.fixture
def toy_data(monkeypatch):
    """MNIST loading replaced by the toy task (128 training images, no hold-out); the calls are recorded."""
    calls = []

    def load(*args, **kwargs):
        calls.append((args, kwargs))
        return synthetic_splits(n_train=128, n_val=0, n_test=64)

    monkeypatch.setattr(data_mod, "load", load)
    return calls


@pytest.fixture
def trainings(monkeypatch):
    """Each training's seed, training-set size and result; trains for real."""
    runs, real = [], commands.train

    def train(model, recipe, splits, **kwargs):
        result = real(model, recipe, splits, **kwargs)
        runs.append((kwargs["seed"], len(splits.x_train), size(model), result))
        return result

    monkeypatch.setattr(commands, "train", train)
    return runs


def test_evaluate_retrains_per_seed_on_the_whole_training_set_and_gives_mean_and_spread(toy_data, trainings, capsys):
    assert run("evaluate", "--spec", "R1", "--seeds", 2, "--dataset", "fashion-mnist", "--train-subset", 300,
               "--epochs", 2, "--device", "cpu") == 0
    assert toy_data == [(("fashion-mnist", None), {"val_size": 0, "train_subset": 300, "image_size": None,
                                                 "cache_dir": ANY})]
    assert [(seed, n, params) for seed, n, params, _ in trainings] == [(0, 128, 20_586), (1, 128, 20_586)]
    accs = [result.test_acc for *_, result in trainings]
    assert None not in accs  # evaluate scores the test set
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "evaluating R1: 20,586 params, 128 fashion-mnist training images, 2 epoch(s), 2 seed(s)"
    assert [line.split("(")[0] for line in lines[1:3]] == [f"  seed {i}: test {a:.2%}  " for i, a in enumerate(accs)]
    assert lines[3] == f"test accuracy: {statistics.mean(accs):.2%} ± {statistics.stdev(accs):.2%} over 2 seed(s)"


def test_evaluate_tta_reports_the_shifted_test_figure_apart_from_the_plain_one(toy_data, trainings, capsys):
    assert run("evaluate", "--spec", "R1", "--seeds", 2, "--device", "cpu", "--tta") == 0
    plain = [result.test_acc for *_, result in trainings]
    shifted = [result.test_tta for *_, result in trainings]
    assert None not in shifted
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("(")[0] for line in lines[1:3]] == [
        f"  seed {i}: test {a:.2%}, with TTA {t:.2%}  " for i, (a, t) in enumerate(zip(plain, shifted))]
    assert lines[3] == f"test accuracy: {statistics.mean(plain):.2%} ± {statistics.stdev(plain):.2%} over 2 seed(s)"
    assert lines[4].startswith("with test-time shifts (TTA, 5x the inference cost on the device; not the model's "
                               f"figure): {statistics.mean(shifted):.2%} ± {statistics.stdev(shifted):.2%}")
    trainings.clear()
    assert run("evaluate", "--spec", "R1", "--seeds", 1, "--device", "cpu") == 0  # without --tta: no shifted figure
    assert trainings[0][3].test_tta is None and "TTA" not in capsys.readouterr().out


def test_evaluate_a_study_trial_retrains_its_recorded_candidate(stored, toy_data, monkeypatch, capsys):
    """Study "s" records no settings (not made by a search): the flags give them."""
    built = []
    monkeypatch.setattr(commands, "train", lambda model, *a, **k: built.append((size(model), k["epochs"])) or
                        made_up_result(0.5))
    assert run("evaluate", "--study", "s", "--trial", 2, "--seeds", 1, "--results-dir", stored, "--device", "cpu",
               "--dataset", "fashion-mnist", "--epochs", 2) == 0
    lines = capsys.readouterr().out.splitlines()
    assert toy_data == [(("fashion-mnist", None), {"val_size": 0, "train_subset": None, "image_size": None,
                                                 "cache_dir": ANY})]
    params = count_params(REFERENCES["R4"].arch)
    assert built == [(params, 2)]
    assert lines[0].startswith(f"evaluating s trial 2: {params:,} params")
    assert lines[-1] == "test accuracy: 49.00% ± 0.00% over 1 seed(s)"


def test_evaluate_a_spec_file_retrains_on_the_data_it_records_unless_told_otherwise(tmp_path, toy_data, no_training):
    leaves = tmp_path / "leaves"
    spec = tmp_path / "best.json"
    spec.write_text(export.spec_json(REFERENCES["R1"], DataInfo(f"folder:{leaves}", (1, 28, 28), tuple("abcdefghij"),
                                                                (0.5,), (0.2,))))
    flags = ["--spec", spec, "--seeds", 1, "--results-dir", tmp_path, "--device", "cpu"]
    assert run("evaluate", *flags) == 0
    assert run("evaluate", *flags, "--dataset", "fashion-mnist") == 0
    assert toy_data == [(("folder", str(leaves)), {"val_size": 0, "train_subset": None, "image_size": 28,
                                                   "cache_dir": tmp_path / ".cache"}),
                        (("fashion-mnist", None), {"val_size": 0, "train_subset": None, "image_size": None,
                                                   "cache_dir": ANY})]
    assert no_training == [1, 1]


def test_evaluate_of_a_network_on_data_it_does_not_take_is_one_line(tmp_path, monkeypatch, no_training, capsys):
    colour = data_mod.Splits(torch.zeros(4, 3, 28, 28), torch.arange(4), torch.zeros(0, 3, 28, 28),
                             torch.zeros(0, dtype=torch.long), torch.zeros(2, 3, 28, 28), torch.arange(2))
    monkeypatch.setattr(data_mod, "load", lambda *a, **k: colour)
    assert cli.main(["evaluate", "--spec", "R1", "--results-dir", str(tmp_path), "--device", "cpu"]) == 2
    assert capsys.readouterr().err == ("error: tensors: holds (3, 28, 28) images in 4 classes, but R1 takes "
                                       "(1, 28, 28) in 10\n")
    assert no_training == []


# -- the settings a study was made with ---------------------------------------------------------------------
MADE_WITH = SearchConfig(dataset="fashion-mnist", epochs=3, train_subset=300)


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    """Study "fm", labelled as a search with MADE_WITH's settings labels its study."""
    return _store(tmp_path_factory.mktemp("fashion"), "fm", study_identity(MADE_WITH, load_space()), "fashion-mnist")


@pytest.fixture
def no_training(monkeypatch):
    epochs = []
    monkeypatch.setattr(commands, "train", lambda *a, **k: epochs.append(k["epochs"]) or made_up_result(0.5))
    return epochs


def test_report_draws_the_baselines_of_the_studys_data_and_labels_its_epochs(fashion, monkeypatch):
    asked, real = [], baselines.baseline_frame
    monkeypatch.setattr(baselines, "baseline_frame", lambda storage, *key: asked.append(key) or real(storage, *key))
    assert run("report", "--study", "fm", "--results-dir", fashion) == 0
    assert asked == [("fashion-mnist", data_mod.VAL_SIZE, 300)]
    assert "validation error, log scale (3 epochs)" in (fashion / "fm" / "frontier.html").read_text()


def test_evaluate_a_study_trial_retrains_on_the_studys_data_for_its_epochs(fashion, toy_data, no_training, capsys):
    assert run("evaluate", "--study", "fm", "--seeds", 1, "--results-dir", fashion, "--device", "cpu") == 0
    assert toy_data == [(("fashion-mnist", None), {"val_size": 0, "train_subset": 300, "image_size": None,
                                                 "cache_dir": ANY})] and no_training == [3]
    assert "fashion-mnist training images, 3 epoch(s)" in capsys.readouterr().out


def test_evaluate_a_study_made_from_an_image_folder_reads_that_folder_at_its_size(tmp_path, toy_data, no_training):
    made = SearchConfig(dataset="folder", data_dir=str(tmp_path / "leaves"), image_size=16)
    _store(tmp_path, "lv", study_identity(made, load_space()))
    assert run("evaluate", "--study", "lv", "--seeds", 1, "--results-dir", tmp_path, "--device", "cpu") == 0
    assert toy_data == [(("folder", str((tmp_path / "leaves").resolve())),
                         {"val_size": 0, "train_subset": None, "image_size": 16, "cache_dir": tmp_path / ".cache"})]
    with pytest.raises(CliError, match="--image-size 32: study 'lv' was made with --image-size 16"):
        commands.dispatch(cli.parse(["evaluate", "--study", "lv", "--results-dir", str(tmp_path), "--image-size", "32"]))


def test_flags_that_agree_with_the_study_are_accepted(fashion, toy_data, no_training, tmp_path):
    same = ["--study", "fm", "--results-dir", fashion, "--dataset", "fashion-mnist", "--train-subset", 300]
    assert run("report", *same) == 0
    assert run("export", *same, "--out", tmp_path / "m.safetensors") == 0
    assert run("evaluate", *same, "--epochs", 3, "--seeds", 1, "--device", "cpu") == 0 and no_training == [3]


MADE = {"--dataset": "--dataset fashion-mnist", "--train-subset": "--train-subset 300", "--epochs": "--epochs 3"}
CONTRADICTIONS = [(command, flag, value) for command in ("report", "export", "evaluate")
                  for flag, value in (("--dataset", "mnist"), ("--train-subset", "100"), ("--epochs", "1"))
                  if flag != "--epochs" or command == "evaluate"]  # only evaluate trains, so only it has --epochs


@pytest.mark.parametrize("command, flag, value", CONTRADICTIONS)
def test_a_flag_contradicting_the_study_is_refused_in_one_line(fashion, toy_data, no_training, tmp_path, capsys,
                                                               command, flag, value):
    out = ["--out", str(tmp_path / "m.safetensors")] if command == "export" else []
    assert cli.main([command, "--study", "fm", "--results-dir", str(fashion), flag, value, *out]) == 2
    assert capsys.readouterr().err == (f"error: {flag} {value}: study 'fm' was made with {MADE[flag]}; "
                                       f"leave {flag} out\n")
    assert not list(tmp_path.iterdir()) and not toy_data and not no_training


def test_a_subset_for_a_study_made_on_every_image_is_refused():
    study = optuna.create_study(study_name="full")
    study.set_user_attr("train_subset", None)
    with pytest.raises(CliError) as e:
        commands.as_made(SearchConfig(), cli.parse(["report", "--study", "full", "--train-subset", "100"]), study)
    assert str(e.value) == "--train-subset 100: study 'full' was made with no --train-subset; leave --train-subset out"


# -- baselines ---------------------------------------------------------------------------------------------
@pytest.fixture
def toy_baselines(monkeypatch):
    """Baselines' data is the toy task (128 training, 64 hold-out images); the configs asked for are recorded."""
    configs = []
    splits = synthetic_splits(128, 64, 64)
    monkeypatch.setattr(commands, "load_data",
                        lambda config, device: configs.append(config) or to_device(splits, device))
    return configs


def _baselines_study(results):
    return optuna.load_study(study_name="baselines-mnist", storage=f"sqlite:///{results}/nas.db")


def test_baselines_train_the_named_references_and_store_them_as_trials(tmp_path, toy_baselines, trainings, capsys):
    assert run("baselines", "--only", "R2, R1", "--train-subset", 512, "--results-dir", tmp_path, "--seed", 4,
               "--device", "cpu") == 0
    assert [c.train_subset for c in toy_baselines] == [512]
    assert [(seed, n, params) for seed, n, params, _ in trainings] == [(4, 128, 8_530), (4, 128, 20_586)]
    study = _baselines_study(tmp_path)
    store = export.artifact_store(tmp_path / "baselines-mnist" / "artifacts")
    for trial, name, (*_, result) in zip(study.trials, ["R2", "R1"], trainings):
        assert trial.state == TrialState.COMPLETE and trial.value == result.val_acc
        assert {k: trial.user_attrs[k] for k in ("reference", "params", "spec", "train_size", "val_size",
                                                 "train_subset")} == {
            "reference": name, "params": count_params(REFERENCES[name].arch), "spec": REFERENCES[name].to_json(),
            "train_size": 128, "val_size": 64, "train_subset": 512}
        assert result.test_acc is None and "test_acc" not in trial.user_attrs  # scored on validation, as trials are
        export.export_trial(trial, store, tmp_path / f"{name}.safetensors")
        assert export.read_spec(tmp_path / f"{name}.safetensors")[0] == REFERENCES[name]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["model", "params", "val", "acc", "seconds"]
    rows = [line.split()[:3] for line in lines[1:3]]
    assert rows == [["R2", "Residual+GAP", "8,530"], ["R1", "LightMNIST", "20,586"]]
    assert "'baselines-mnist'" in lines[3]


def test_a_baseline_whose_training_fails_is_stored_failed_with_its_reason(tmp_path, toy_baselines, monkeypatch):
    def diverge(*args, **kwargs):
        raise TrainingDiverged("loss became nan at step 3")

    monkeypatch.setattr(commands, "train", diverge)
    with pytest.raises(TrainingDiverged):
        run("baselines", "--only", "R2", "--results-dir", tmp_path, "--device", "cpu")
    [trial] = _baselines_study(tmp_path).trials
    assert trial.state == TrialState.FAIL and trial.user_attrs["reference"] == "R2"
    assert trial.user_attrs["fail_reason"] == "TrainingDiverged: loss became nan at step 3"
