"""nas.deploy.onnx_deploy and the commands on it: checked ONNX exports (fp32 and int8) of a network trained for a second on a toy
npz set, `export --format onnx` of a stored trial, and `check`, with one line for a file it cannot use."""
import json

import onnx
import optuna
import pytest
import torch

from nas import cli, data as data_mod
from nas.deploy import onnx_deploy as deploy, export, onnx_export
from nas.space.budget import count_params
from nas.space.build import build
from nas.config import SearchConfig
from nas.engine.identity import study_identity
from nas.engine.objective import record_candidate, record_result
from nas.space.space_file import load_space
from nas.space.spec import ArchSpec, Candidate, TrainRecipe
from nas.space.blocks import Conv, GlobalAvgPool, Linear, Pool
from nas.engine.train import TrainResult, train
from tests.conftest import REFERENCES, torchvision_info
from tests.conftest import QUADRANT_CLASSES as CLASSES, QUADRANT_SHAPE as SHAPE, foreign_model, quadrants_npz

optuna.logging.set_verbosity(optuna.logging.WARNING)
CANDIDATE = Candidate(ArchSpec((Conv(16, bn=True, bias=False, act="relu"), Pool(),
                                Conv(32, bn=True, bias=False, act="relu"), Pool(), GlobalAvgPool(), Linear(CLASSES)),
                               SHAPE, CLASSES),
                      TrainRecipe(lr=0.1, batch_size=32))


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    return quadrants_npz(tmp_path_factory.mktemp("toy") / "quadrants.npz", 1200, 1200)


@pytest.fixture(scope="module")
def splits(npz):
    return data_mod.load("npz", npz)


@pytest.fixture(scope="module")
def trained(splits):
    model = build(CANDIDATE.arch, seed=0)
    result = train(model, CANDIDATE.recipe, splits, epochs=2, seed=0)
    assert result.test_acc > 0.9  # the toy task is learnt, so accuracies before and after int8 mean something
    return model.eval(), result


@pytest.fixture(scope="module")
def weights(tmp_path_factory, trained, splits):
    path = tmp_path_factory.mktemp("weights") / "toy.safetensors"
    export.save(trained[0], CANDIDATE, path, splits.info)
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory, npz, trained, splits):
    """Results folder holding study "toy", made from the npz file, of one trial with the trained weights."""
    results = tmp_path_factory.mktemp("results")
    config = SearchConfig(results_dir=str(results), study="toy", dataset="npz", data_dir=str(npz))
    study = optuna.create_study(study_name="toy", storage=config.storage_url, direction="maximize")
    for key, value in study_identity(config, load_space()).items():
        study.set_user_attr(key, value)
    trial = study.ask()
    record_candidate(trial, CANDIDATE, count_params(CANDIDATE.arch))
    result = TrainResult(val_acc=trained[1].val_acc, test_acc=trained[1].test_acc, train_seconds=1.0, eval_seconds=0.1,
                         steps=1, final_loss=0.1)
    record_result(trial, result, trained[0], CANDIDATE, export.artifact_store(config.artifacts("toy")),
                  results / "tmp", splits.info)
    study.tell(trial, result.val_acc)
    return results


def main(*argv) -> int:
    return cli.main([str(a) for a in argv])


def error_line(capsys) -> str:
    """stderr, which must be one `error:` line."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err


# -- exports -----------------------------------------------------------------------------------------------
def test_an_export_is_checked_then_written_with_its_spec_beside_it(weights, splits, tmp_path):
    lines, out = [], tmp_path / "m.onnx"
    assert deploy.export_onnx(weights, out, splits, say=lines.append) == out
    assert len(lines) == 1 and lines[0].startswith("onnxruntime vs PyTorch on 1,000 test images: largest logit "
                                                   "difference ") and "predictions agree on 100.00%" in lines[0]
    proto, candidate, info = onnx_export.read(out)
    assert candidate == CANDIDATE and info == splits.info and not onnx_export.is_int8(proto)
    assert out.with_suffix(".json").read_text() == export.spec_json(CANDIDATE, splits.info)
    model, session = export.load(weights), onnx_export.session(proto)
    result = deploy.compare(session, model, splits.x_test[:1000])
    assert result.passed and result.images == 1000
    assert f"{result.max_diff:.2e}" in lines[0]


def test_a_failed_check_is_a_one_line_error_and_leaves_the_file_as_it_was(weights, splits, tmp_path, monkeypatch):
    out = tmp_path / "m.onnx"
    out.write_text("the previous export")
    monkeypatch.setattr(deploy, "MAX_DIFF", -1.0)  # no difference can pass
    with pytest.raises(deploy.CheckFailed) as e:
        deploy.export_onnx(weights, out, splits, say=print)
    assert str(e.value).startswith(f"{out}: onnxruntime vs PyTorch on 1,000 test images: largest logit difference ")
    assert "\n" not in str(e.value) and e.value.exit_code == 3
    assert out.read_text() == "the previous export" and not out.with_suffix(".json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temporary file left behind


def test_the_check_fails_when_the_predictions_disagree(weights, splits, monkeypatch):
    monkeypatch.setattr(deploy, "MIN_AGREEMENT", 1.01)
    model = export.load(weights)
    with pytest.raises(deploy.CheckFailed, match="predictions agree on 100.00%"):
        deploy.check(onnx_export.model_proto(model, CANDIDATE, splits.info), model, splits.x_test, "m.onnx")


def test_weights_that_do_not_record_their_data_are_refused(trained, splits, tmp_path):
    bare = tmp_path / "bare.safetensors"
    export.save(trained[0], CANDIDATE, bare)
    with pytest.raises(export.WeightsError, match="does not record the data it was trained on"):
        deploy.export_onnx(bare, tmp_path / "bare.onnx", splits)
    assert not (tmp_path / "bare.onnx").exists()


def test_int8_is_smaller_and_about_as_accurate(weights, splits, tmp_path):
    lines, fp32, int8 = [], tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    deploy.export_onnx(weights, fp32, splits, say=lines.append)
    deploy.export_onnx(weights, int8, splits, int8=True, say=lines.append)
    assert lines[1] == lines[0]  # the fp32 model is checked first, as for an fp32 export
    proto, candidate, info = onnx_export.read(int8)
    assert onnx_export.is_int8(proto) and (candidate, info) == (CANDIDATE, splits.info)
    sizes = {p.name: p.stat().st_size for p in (fp32, int8)}
    assert sizes["int8.onnx"] < 0.7 * sizes["fp32.onnx"]
    acc = {p.name: deploy.accuracy(onnx_export.session(onnx.load(str(p))), splits.x_test, splits.y_test)
           for p in (fp32, int8)}
    assert acc["fp32.onnx"] > 0.9 and acc["int8.onnx"] > acc["fp32.onnx"] - 0.02
    assert lines[2] == (f"int8: {sizes['int8.onnx']:,} bytes (fp32 {sizes['fp32.onnx']:,}); test accuracy on "
                        f"{len(splits.y_test):,} images, onnxruntime: fp32 {acc['fp32.onnx']:.2%}, "
                        f"int8 {acc['int8.onnx']:.2%}")


def test_int8_is_calibrated_on_training_images(weights, splits, tmp_path, monkeypatch):
    seen = []
    real = onnx_export.quantise
    monkeypatch.setattr(onnx_export, "quantise", lambda proto, images: seen.append(images) or real(proto, images))
    deploy.export_onnx(weights, tmp_path / "q.onnx", splits, int8=True, say=lambda line: None)
    assert len(seen) == 1 and torch.equal(seen[0], splits.x_train[:1000])


def test_write_best_onnx_logs_its_check_and_check_finds_the_weights_beside_it(weights, splits, tmp_path, capsys):
    best = tmp_path / "best.safetensors"
    best.write_bytes(weights.read_bytes())
    assert deploy.write_best_onnx(best, tmp_path / "best.onnx", splits) == tmp_path / "best.onnx"
    assert capsys.readouterr().out.startswith("onnxruntime vs PyTorch on 1,000 test images")
    assert main("check", tmp_path / "best.onnx") == 0
    assert capsys.readouterr().out.startswith("onnxruntime vs PyTorch on 1,000 test images")


# -- the commands --------------------------------------------------------------------------------------------
def test_export_format_onnx_of_a_stored_trial_then_check_it(study, tmp_path, capsys):
    out = tmp_path / "sub" / "toy.onnx"
    assert main("export", "--study", "toy", "--results-dir", study, "--out", out) == 0  # the format from the suffix
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("onnxruntime vs PyTorch on 1,000 test images")
    assert lines[1].startswith("trial 0 (")
    assert lines[1].endswith(f"-> {out}, {out.with_suffix('.json')} and {out.with_suffix('.safetensors')}")
    proto, candidate, info = onnx_export.read(out)
    assert candidate == CANDIDATE and info.source.startswith("npz:") and not onnx_export.is_int8(proto)
    assert json.loads(out.with_suffix(".json").read_text())["data"] == info.to_dict()
    assert sorted(p.name for p in out.parent.iterdir()) == ["toy.json", "toy.onnx", "toy.safetensors"]
    assert export.read_spec(out.with_suffix(".safetensors"))[0] == CANDIDATE
    assert main("check", out) == 0  # the weights beside it
    assert capsys.readouterr().out.startswith("onnxruntime vs PyTorch on 1,000 test images")


def test_export_format_onnx_whose_check_fails_writes_nothing(study, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(deploy, "MAX_DIFF", -1.0)  # no difference can pass
    assert main("export", "--study", "toy", "--results-dir", study, "--out", tmp_path / "toy.onnx") == 3
    assert "the ONNX model does not compute what the network does" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no model, spec, weights or temporary folder


def test_export_format_onnx_int8_of_a_stored_trial_then_check_it(study, tmp_path, capsys):
    out = tmp_path / "toy-int8.onnx"
    assert main("export", "--study", "toy", "--results-dir", study, "--out", out, "--format", "onnx-int8") == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines[:2]] == ["onnxruntime vs PyTorch on 1,000 test images", "int8"]
    assert f"int8: {out.stat().st_size:,} bytes" in lines[1]
    assert onnx_export.is_int8(onnx_export.read(out)[0])
    assert main("check", out) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("onnxruntime vs PyTorch on 1,000 test images")
    assert lines[0].endswith("(int8: not held to the limits)")
    assert lines[1].startswith(f"int8: {out.stat().st_size:,} bytes")


def test_export_format_tflite_int8_of_a_stored_trial_writes_its_c_array_then_check_it(study, tmp_path, capsys):
    from nas.deploy import tflite_export, tflite_runtime

    out = tmp_path / "toy.tflite"
    assert main("export", "--study", "toy", "--results-dir", study, "--out", out, "--format", "tflite-int8") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("LiteRT vs PyTorch on 1,000 test images")
    assert lines[1].startswith("TFLM int8 vs the fp32 network on 1,000 test images: predictions agree on")
    assert lines[2].startswith("int8 test accuracy on 1,200 images: TFLM ")
    assert lines[3].startswith(f"flash {out.stat().st_size:,} bytes") and "TFLM arena" in lines[3]
    # the toy images' brightest pixel is 209: that is the top of the int8 range
    assert lines[4] == "input: int8 NHWC (1, 16, 16, 1), q = round(x / 0.00321415) - 128 for pixels x scaled to [0, 1]"
    assert lines[5].endswith(f"-> {out}, {out.with_suffix('.json')}, {out.with_suffix('.safetensors')}, "
                             f"{tmp_path / 'toy_data.cc'} and {tmp_path / 'toy_data.h'}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy.json", "toy.safetensors", "toy.tflite", "toy_data.cc",
                                                         "toy_data.h"]
    flatbuffer, candidate, info = tflite_export.read(out)
    assert candidate == CANDIDATE and tflite_runtime.is_int8(flatbuffer) and info.source.startswith("npz:")
    assert f"toy_data_len = {len(flatbuffer)};" in (tmp_path / "toy_data.cc").read_text()
    assert main("check", out) == 0
    assert capsys.readouterr().out.splitlines() == lines[1:5]  # the same checks, the same figures


def test_export_format_tflite_is_fp32_checked_by_litert(study, tmp_path, capsys):
    from nas.deploy import tflite_export, tflite_runtime

    out = tmp_path / "toy.tflite"
    assert main("export", "--study", "toy", "--results-dir", study, "--out", out) == 0  # the format from the suffix
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("LiteRT vs PyTorch on 1,000 test images")
    assert not tflite_runtime.is_int8(tflite_export.read(out)[0])
    assert main("check", out) == 0
    assert capsys.readouterr().out.startswith("LiteRT vs PyTorch on 1,000 test images")


def test_export_format_tflite_int8_whose_tflm_check_fails_writes_nothing(study, tmp_path, monkeypatch, capsys):
    from nas.deploy import tflite_deploy

    monkeypatch.setattr(tflite_deploy, "MIN_INT8_AGREEMENT", 1.01)  # no agreement can pass
    assert main("export", "--study", "toy", "--results-dir", study, "--out", tmp_path / "toy.tflite",
                "--format", "tflite-int8") == 3
    assert "TFLM int8 and the fp32 network agree on" in error_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_export_format_tflite_without_the_toolchain_says_how_to_install_it(study, tmp_path, monkeypatch, capsys):
    import builtins

    real = builtins.__import__

    def missing(name, *args, **kwargs):
        if name.split(".")[0] in ("litert_torch", "ai_edge_quantizer", "tflite_micro"):
            raise ImportError(f"No module named {name!r}", name=name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", missing)
    assert main("export", "--study", "toy", "--results-dir", study, "--out", tmp_path / "toy.tflite",
                "--format", "tflite-int8") == 2
    assert "pip install -e '.[tflite]'" in error_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_export_format_safetensors_stays_as_it_was(study, tmp_path, capsys):
    out = tmp_path / "toy.onnx"
    assert main("export", "--study", "toy", "--results-dir", study, "--out", out, "--format", "safetensors") == 0
    assert export.read_spec(out)[0] == CANDIDATE  # a safetensors file, whatever its name


def test_check_of_a_tampered_model_is_a_one_line_error(weights, splits, tmp_path, capsys):
    other = export.Normalised(build(CANDIDATE.arch, seed=5), splits.info).eval()  # the same network, other weights
    path = tmp_path / "tampered.onnx"
    path.write_bytes(onnx_export.model_proto(other, CANDIDATE, splits.info).SerializeToString())
    assert main("check", path, "--weights", weights) == 3
    assert "the ONNX model does not compute what the network does" in error_line(capsys)


def _write(path, content) -> str:
    path.write_bytes(content)
    return str(path)


@pytest.mark.parametrize("what, message", [
    ("corrupt", "not a readable ONNX model"),
    ("foreign", "not written by search.py export"),
    ("missing", "No such file or directory"),
    ("no weights", "no such weights file; pass --weights"),
    ("other weights", "the weights of another network"),
])
def test_check_of_a_file_it_cannot_use_is_one_line(what, message, weights, splits, tmp_path, capsys):
    path, argv = tmp_path / "m.onnx", []
    ours = onnx_export.model_proto(export.load(weights), CANDIDATE, splits.info).SerializeToString()
    if what == "corrupt":
        path.write_bytes(b"\x08\x07\xff\xff not a protobuf")
    elif what == "foreign":
        path.write_bytes(foreign_model().SerializeToString())
    elif what in ("no weights", "other weights"):
        path.write_bytes(ours)
    if what == "other weights":
        other = Candidate(ArchSpec((Conv(4, act="relu"), GlobalAvgPool(), Linear(CLASSES)), SHAPE, CLASSES))
        export.save(build(other.arch), other, tmp_path / "other.safetensors", splits.info)
        argv = ["--weights", tmp_path / "other.safetensors"]
    assert main("check", path, *argv) == 2
    assert message in error_line(capsys)


def test_check_of_a_model_of_mnist_reads_mnist_under_data_dir(mnist_root, tmp_path, capsys):
    r1, weights = REFERENCES["R1"], tmp_path / "r1.safetensors"
    export.save(build(r1.arch, seed=0), r1, weights, torchvision_info("mnist"))
    config = SearchConfig(data_dir=str(mnist_root))
    deploy.export_onnx(weights, tmp_path / "r1.onnx", deploy.data_for(export.read_spec(weights)[1], config))
    assert main("check", tmp_path / "r1.onnx", "--data-dir", mnist_root) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("onnxruntime vs PyTorch on 1,000 test images")


def test_check_needs_data_that_can_be_read_again(splits):
    info = data_mod.DataInfo("tensors", SHAPE, tuple("abcd"), (0.5,), (0.2,))
    with pytest.raises(data_mod.DataError, match="'tensors', which cannot be read again"):
        deploy.data_for(info, SearchConfig())


def test_check_reads_a_moved_npz_file_from_data_dir(npz, splits, tmp_path):
    moved = tmp_path / "moved.npz"
    moved.write_bytes(npz.read_bytes())
    found = deploy.data_for(splits.info, SearchConfig(data_dir=str(moved)))
    assert torch.equal(found.x_test, splits.x_test) and found.info.shape == SHAPE
    resized = data_mod.DataInfo(splits.info.source, (1, 12, 12), splits.info.classes, (0.5,), (0.2,))
    assert deploy.data_for(resized, SearchConfig()).x_test.shape[1:] == (1, 12, 12)  # at the size it was trained at
