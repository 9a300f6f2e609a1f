"""nas.deploy.tflite_export and nas.deploy.tflite_deploy: a network of every block kind and head converts to fp32 TFLite that LiteRT
runs as PyTorch does, and to full-integer int8 that TensorFlow Lite Micro runs as the fp32 network does; the files
carry their spec, data and input quantisation; the C array compiles; damaged files and a missing toolchain get one
line."""
import json
import shutil
import subprocess

import numpy as np
import pytest
import torch

from nas import cli
from nas.deploy import onnx_deploy as deploy, tflite_deploy, tflite_export, tflite_runtime
from nas.space import tflite_graph, tflm_budget
from nas.space.blocks import Residual
from tests.test_onnx_export import HAND_WRITTEN, trained_looking

IMAGES = 20  # per network: the checks' logic, not their statistics
# TFLM has no GELU kernel: those networks convert (LiteRT runs them) but cannot go onto a microcontroller
ON_TFLM = [name for name, c in HAND_WRITTEN.items() if not tflite_graph.unsupported_layers(c.arch)]


def images_for(shape, seed: int) -> torch.Tensor:
    """uint8 images spanning [0, 255], so the int8 input's range is calibrated as on real data."""
    x = torch.randint(0, 256, (IMAGES, *shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    x[:, :, 0, 0], x[:, :, -1, -1] = 0, 255
    return x


@pytest.fixture(scope="module")
def converted():
    """Each hand-written network: (model, fp32 flatbuffer, int8 flatbuffer with metadata, its images)."""
    out = {}
    for name, candidate in HAND_WRITTEN.items():
        model = trained_looking(candidate.arch, seed=2)
        images = images_for(candidate.arch.input_shape, seed=3)
        fp32 = tflite_export.fp32_flatbuffer(model, candidate.arch.input_shape)
        int8 = tflite_export.int8_model(fp32, images, candidate, model.info) if name in ON_TFLM else None
        out[name] = model, fp32, int8, images
    return out


@pytest.mark.parametrize("name", list(HAND_WRITTEN))
def test_every_block_kind_and_head_runs_in_litert_as_in_pytorch(converted, name):
    model, fp32, _, images = converted[name]
    result = tflite_deploy.check_fp32(fp32, model, images, name)
    assert result.images == IMAGES and result.passed and result.runtime == "LiteRT"


def test_every_block_kind_and_head_but_gelu_runs_on_tflm():
    assert set(HAND_WRITTEN) - set(ON_TFLM) == {"conv-gelu", "linear-activations"}


@pytest.mark.parametrize("name", ON_TFLM)
def test_every_block_kind_and_head_runs_in_tflm_as_the_fp32_network(converted, name):
    model, _, int8, images = converted[name]
    ours, theirs = tflite_runtime.tflm_logits(int8, images), deploy.torch_logits(model, images)
    agree = deploy.agreement(ours, theirs, tflite_deploy.TFLM, "the fp32 network").agreement
    assert agree >= tflite_deploy.MIN_INT8_AGREEMENT
    spread = np.abs(theirs).max()
    assert np.abs(ours - theirs).max() <= 0.1 * spread  # int8 rounding, not another function


def test_tflm_has_no_gelu_kernel_so_such_a_network_is_refused_in_one_line(converted):
    """What unsupported_layers predicts from the spec is what TFLM says of the converted model."""
    model, fp32, _, images = converted["conv-gelu"]
    int8 = tflite_export.int8_flatbuffer(fp32, images)
    with pytest.raises(tflite_runtime.TfliteError, match="TensorFlow Lite Micro cannot run the model"):
        tflite_runtime.tflm_logits(int8, images)
    with pytest.raises(tflite_runtime.TfliteError, match="no int8 kernel for GELU") as e:
        tflite_export.check_runs_on_tflm(HAND_WRITTEN["conv-gelu"].arch)
    assert "\n" not in str(e.value)


def test_the_int8_model_is_full_integer_nhwc_and_says_how_to_feed_it(converted):
    model, _, int8, _ = converted["conv-plain"]
    quant = json.loads(tflite_export.metadata(int8)[tflite_export.INPUT_KEY])
    assert quant["layout"] == "NHWC" and quant["dtype"] == "int8" and quant["shape"] == [1, 12, 12, 3]
    # pixels 0..255 of [0, 1] images map onto the whole int8 range
    assert quant["scale"] == pytest.approx(1 / 255, rel=0.01) and quant["zero_point"] == -128
    assert tflite_runtime.is_int8(int8)
    from ai_edge_litert.interpreter import Interpreter

    out = Interpreter(model_content=int8).get_output_details()[0]
    assert out["dtype"] == np.int8


def test_the_files_carry_their_spec_and_data(converted, tmp_path):
    _, _, int8, _ = converted["residual-identity"]
    path = tmp_path / "m.tflite"
    path.write_bytes(int8)
    flatbuffer, candidate, data = tflite_export.read(path)
    assert candidate == HAND_WRITTEN["residual-identity"] and data == converted["residual-identity"][0].info


@pytest.mark.parametrize("name", ON_TFLM)
def test_the_predicted_arena_and_flash_hold_for_every_block_kind(converted, name):
    """nas.space.tflm_budget, from the spec alone, against TFLM's measured arena and the file's size: the arena a ceiling
    within 10% of it, the flash within 5%."""
    model, _, int8, _ = converted[name]
    candidate = HAND_WRITTEN[name]
    measured, predicted = tflite_runtime.measured_arena(int8), tflm_budget.arena(candidate.arch)
    assert measured.total <= predicted.total <= 1.10 * measured.total, (measured, predicted)
    flash = tflm_budget.flash_bytes(candidate.arch, tflm_budget.metadata_bytes(candidate, model.info))
    assert abs(flash - len(int8)) <= 0.05 * len(int8), (flash, len(int8))
    # what the search's flash ceiling measures, before a recipe is drawn: a bound for any recipe on this data, its
    # floats taken at their longest (these files are 3-7 KB: a few hundred bytes matter)
    bound = tflm_budget.flash_bytes(candidate.arch, tflm_budget.spec_metadata_bytes(candidate.arch, model.info))
    assert len(int8) <= bound <= len(int8) + 512


def test_residual_networks_hold_their_input_in_the_arena(converted):
    """TFLM keeps a residual stage's input alive beside its body: more activations than the plain chain of the same
    layers."""
    residual = tflite_runtime.measured_arena(converted["residual-identity"][2])
    assert any(isinstance(b, Residual) for b in HAND_WRITTEN["residual-identity"].arch.blocks)
    c, h, w = HAND_WRITTEN["residual-identity"].arch.input_shape
    # input (int8), the first conv's output, the body's two outputs: at least three 8-channel maps at once
    assert residual.head >= 3 * 8 * h * w
    assert residual.total == residual.head + residual.tail and residual.tail > 0


def test_the_c_array_compiles(converted, tmp_path):
    cc, compiler = shutil.which("cc"), shutil.which("c++") or shutil.which("g++")
    if cc is None or compiler is None:
        pytest.fail("no C or C++ compiler on this machine")
    _, _, int8, _ = converted["conv-plain"]
    source, header = tflite_export.c_source(int8, "model-1")
    (tmp_path / "model-1_data.cc").write_text(source)
    (tmp_path / "model-1_data.h").write_text(header)
    assert "alignas(16) const unsigned char model_1_data[]" in source
    assert f"model_1_data_len = {len(int8)};" in source
    subprocess.run([cc, "-c", "model-1_data.cc"], check=True, cwd=tmp_path)  # as a TFLM build compiles it
    main = tmp_path / "main.cc"
    main.write_text('#include "model-1_data.h"\nint main() { return model_1_data_len == 0 || model_1_data[4] != \'T\'; }\n')
    subprocess.run([compiler, "-std=c++11", "-o", str(tmp_path / "main"), str(tmp_path / "model-1_data.cc"),
                    str(main)], check=True, cwd=tmp_path)
    assert subprocess.run([str(tmp_path / "main")]).returncode == 0  # the array holds the flatbuffer ("TFL3" at 4)


def test_a_check_fails_when_tflm_disagrees(converted, monkeypatch):
    model, _, int8, images = converted["conv-plain"]
    splits = type("S", (), {"x_test": images, "y_test": torch.zeros(IMAGES, dtype=torch.long)})()
    monkeypatch.setattr(tflite_runtime, "tflm_logits", lambda fb, x: -deploy.torch_logits(model, x))
    with pytest.raises(deploy.CheckFailed, match="agree on"):
        tflite_deploy.check_int8(int8, model, splits, "m.tflite")


@pytest.mark.parametrize("content", [b"", b"not a flatbuffer at all" * 10, b"\x00" * 64])
def test_a_damaged_tflite_file_is_one_line_and_exit_2(tmp_path, capsys, content):
    path = tmp_path / "bad.tflite"
    path.write_bytes(content)
    assert cli.main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: not") and err.count("\n") == 1


def test_a_foreign_tflite_file_is_one_line_and_exit_2(converted, tmp_path, capsys):
    path = tmp_path / "foreign.tflite"
    path.write_bytes(converted["conv-plain"][1])  # no metadata: not written by export
    assert cli.main(["check", str(path)]) == 2
    assert "not written by search.py export" in capsys.readouterr().err


def test_without_the_toolchain_a_tflite_format_says_how_to_install_it(monkeypatch):
    import builtins

    real = builtins.__import__

    def missing(name, *args, **kwargs):
        if name.split(".")[0] == "litert_torch":
            raise ImportError(f"No module named {name!r}", name=name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", missing)
    with pytest.raises(tflite_export.MissingToolchain, match=r"pip install -e '\.\[tflite\]'") as e:
        tflite_export.require()
    assert e.value.exit_code == 2 and "\n" not in str(e.value)
