"""Reading the IDX files: synthetic files load; each damaged or missing file gives a one-line error naming it."""
import gzip
import os
import shutil
import struct
import subprocess
import sys

import pytest
import torch

from nas import data as data_mod
from nas.data import sources
from nas.errors import UserError
from tests.conftest import ROOT

N_TRAIN, N_TEST = 30, 10


def _images(n, rows=28, cols=28):
    return struct.pack(">IIII", 2051, n, rows, cols) + bytes(range(256)) * (n * rows * cols // 256) + bytes(
        n * rows * cols % 256)


def _labels(n):
    return struct.pack(">II", 2049, n) + bytes(i % 10 for i in range(n))


def _root(tmp_path, gz=False, **override):
    raw = sources.raw_dir("mnist", tmp_path)
    raw.mkdir(parents=True)
    files = {"train_images": _images(N_TRAIN), "train_labels": _labels(N_TRAIN),
             "test_images": _images(N_TEST), "test_labels": _labels(N_TEST), **override}
    for key, content in files.items():
        name = sources.FILES[key]
        if gz:
            (raw / f"{name}.gz").write_bytes(gzip.compress(content))
        else:
            (raw / name).write_bytes(content)
    return tmp_path


def _load(root):
    return data_mod.load("mnist", root, val_size=5, download=False)


def test_the_synthetic_files_load(tmp_path):
    splits = _load(_root(tmp_path))
    assert len(splits.x_train) == N_TRAIN - 5 and len(splits.x_test) == N_TEST


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("key", sorted(sources.FILES))
def test_truncated_file_names_the_file(tmp_path, key, gz):
    root = _root(tmp_path, gz=gz)
    path = sources.find_file(sources.raw_dir("mnist", root), sources.FILES[key])
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(data_mod.DataError) as err:
        _load(root)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("key", sorted(sources.FILES))
def test_flipped_magic_number_names_the_file(tmp_path, key):
    root = _root(tmp_path)
    path = sources.raw_dir("mnist", root) / sources.FILES[key]
    content = bytearray(path.read_bytes())
    content[3] ^= 0xFF
    path.write_bytes(bytes(content))
    with pytest.raises(data_mod.DataError, match="magic number") as err:
        _load(root)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("key", sorted(sources.FILES))
def test_missing_file_is_named(tmp_path, key):
    root = _root(tmp_path)
    (sources.raw_dir("mnist", root) / sources.FILES[key]).unlink()
    with pytest.raises(UserError, match=sources.FILES[key]):  # a UserError: the command line prints it in one line
        _load(root)


def test_image_and_label_counts_that_disagree(tmp_path):
    root = _root(tmp_path, train_labels=_labels(N_TRAIN - 1))
    with pytest.raises(data_mod.DataError, match=f"{sources.FILES['train_labels']}.*{N_TRAIN - 1} labels for {N_TRAIN}"):
        _load(root)


def test_wrong_image_size(tmp_path):
    root = _root(tmp_path, test_images=_images(N_TEST, 32, 32))
    with pytest.raises(data_mod.DataError, match=f"{sources.FILES['test_images']}.*32x32"):
        _load(root)


def test_label_out_of_range_and_not_gzip(tmp_path):
    root = _root(tmp_path, test_labels=struct.pack(">II", 2049, N_TEST) + bytes([3] * (N_TEST - 1) + [12]))
    with pytest.raises(data_mod.DataError, match="label 12"):
        _load(root)
    raw = sources.raw_dir("mnist", root)
    shutil.move(raw / sources.FILES["test_labels"], raw / (sources.FILES["test_labels"] + ".gz"))
    with pytest.raises(data_mod.DataError, match="cannot be read"):
        _load(root)


@pytest.mark.parametrize("error, reason", [
    (None, None),
    # torchvision's own message: each mirror's error on the lines after the first
    (RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://m1/, got:\nHTTP Error 503: Service "
                  "Unavailable\nTried https://m2/, got:\n<urlopen error [SSL: CERTIFICATE_VERIFY_FAILED]>\n"),
     "RuntimeError: Error downloading train-images-idx3-ubyte.gz: Tried https://m1/, got: HTTP Error 503: Service "
     "Unavailable Tried https://m2/, got: <urlopen error [SSL: CERTIFICATE_VERIFY_FAILED]>"),
    (OSError(28, "No space left on device"), "OSError: [Errno 28] No space left on device"),
    (ConnectionResetError(), "ConnectionResetError"),
], ids=["no-error", "mirrors", "disk", "no-message"])
def test_a_failed_download_gives_its_reason_in_the_one_line_error(tmp_path, monkeypatch, error, reason):
    import torchvision.datasets as tvd

    def download(*args, **kwargs):
        if error is not None:
            raise error

    monkeypatch.setattr(tvd, "MNIST", download)
    with pytest.raises(data_mod.DataError) as e:
        data_mod.load("mnist", tmp_path)
    outcome = "did not provide them" if reason is None else f"failed: {reason}"
    assert f"t10k-labels-idx1-ubyte) and the download {outcome}. Put the four IDX files" in str(e.value)
    assert "\n" not in str(e.value)


def test_cli_reports_a_damaged_data_file_in_one_line(tmp_path, capsys):
    from nas.cli import main

    root = _root(tmp_path / "data")
    path = sources.raw_dir("mnist", root) / sources.FILES["train_images"]
    path.write_bytes(path.read_bytes()[:100])
    rc = main(["evaluate", "--spec", "R2", "--data-dir", str(root), "--threads", "1", "--seeds", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and str(path) in err


@pytest.mark.parametrize("ci, outcome", [("", "1 skipped"), ("true", "1 error")])
def test_integration_tests_without_data_skip_locally_and_fail_under_ci(tmp_path, ci, outcome):
    """On a fresh clone with no data and no download, the README's test command still runs."""
    (tmp_path / "test_needs_mnist.py").write_text("def test_it(mnist_root):\n    pass\n")
    (tmp_path / "conftest.py").write_text("from tests.conftest import *  # noqa: F401,F403\n")
    # a closed port as the proxy makes torchvision's download fail at once, with or without internet
    env = {**os.environ, data_mod.ENV_VAR: str(tmp_path / "empty"), "CI": ci, "PYTHONPATH": str(ROOT),
           "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert outcome in proc.stdout, proc.stdout
    assert "could not be downloaded" in proc.stdout


# -- MNIST as before, and the same MNIST through the three kinds of source -----------------------------------------
def _float_tensors_of_before(images, mean, std):
    """nas.data.normalise as it was when the splits held float tensors (a536d30): studies made then must resume."""
    return ((images.float() / 255.0 - mean) / std).unsqueeze(1).contiguous()


@pytest.mark.integration
@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
def test_inputs_are_bit_identical_to_the_float_tensors_of_before(mnist_root, dataset):
    if sources.missing_files(dataset, mnist_root):
        pytest.skip(f"{dataset} is not in {mnist_root}")
    raw = sources.raw_dir(dataset, mnist_root)
    images = sources.read_images(sources.find_file(raw, sources.FILES["train_images"]))
    mean, std = {"mnist": (0.1307, 0.3081), "fashion-mnist": (0.2860, 0.3530)}[dataset]  # the published constants
    before = _float_tensors_of_before(images, mean, std)
    splits = data_mod.load(dataset, mnist_root, download=False)
    assert (splits.info.mean, splits.info.std) == ((mean,), (std,))
    order = torch.randperm(60_000, generator=torch.Generator().manual_seed(data_mod.SPLIT_SEED))
    assert len(splits.x_val) == data_mod.VAL_SIZE and splits.x_train.dtype == torch.uint8
    for x, idx in ((splits.x_train[:3000], order[data_mod.VAL_SIZE:][:3000]), (splits.x_val[:3000], order[:3000])):
        assert torch.equal(splits.inputs(x), before[idx])


def _subset_as_idx_folder_and_npz(mnist_root, tmp_path, n_train=2000, n_test=500):
    """The first MNIST images written out as IDX files, a PNG folder of numbered images, and an npz."""
    from PIL import Image

    raw = sources.raw_dir("mnist", mnist_root)
    read = {k: (sources.read_images if "images" in k else lambda p: sources.read_labels(p, 60_000 if "train" in k
                                                                                        else 10_000))(
        sources.find_file(raw, name)) for k, name in sources.FILES.items()}
    parts = {"train": (read["train_images"][:n_train], read["train_labels"][:n_train]),
             "test": (read["test_images"][:n_test], read["test_labels"][:n_test])}
    classes = data_mod.load("mnist", mnist_root, download=False).info.classes  # torchvision's: "0 - zero", ...
    idx_root = tmp_path / "idx"
    out = sources.raw_dir("mnist", idx_root)
    out.mkdir(parents=True)
    for part, prefix in (("train", "train"), ("test", "t10k")):
        x, y = parts[part]
        (out / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, len(x), 28, 28) + x.numpy().tobytes())
        (out / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, len(y)) + y.to(torch.uint8).numpy().tobytes())
    folder = tmp_path / "folder"
    for part, (x, y) in parts.items():
        for i, (image, label) in enumerate(zip(x, y)):
            path = folder / part / classes[int(label)] / f"{i:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.numpy()).save(path)
    npz = tmp_path / "mnist.npz"
    import numpy as np
    np.savez(npz, x_train=parts["train"][0].numpy(), y_train=parts["train"][1].numpy(), x_test=parts["test"][0].numpy(),
             y_test=parts["test"][1].numpy(), classes=np.array(classes))
    return idx_root, folder, npz


@pytest.mark.integration
def test_idx_folder_and_npz_of_the_same_images_give_the_same_tensors_and_the_same_trial(mnist_root, tmp_path):
    import dataclasses

    from nas.engine.device import prepare_model
    from nas.data import to_device
    from nas.space.references import by_name
    from nas.engine.train import train

    idx_root, folder, npz = _subset_as_idx_folder_and_npz(mnist_root, tmp_path)
    loaded = {"idx": data_mod.load("mnist", idx_root, download=False),
              "folder": data_mod.load("folder", folder, cache_dir=tmp_path / "cache"),
              "npz": data_mod.load("npz", npz)}
    for name, splits in loaded.items():
        assert splits.info.shape == (1, 28, 28) and splits.info.classes == loaded["idx"].info.classes, name
        assert len(splits.x_val) == 2000 // 6 and len(splits.x_test) == 500
        for key in data_mod.TENSORS:
            assert torch.equal(getattr(splits, key), getattr(loaded["idx"], key)), (name, key)
    # mnist keeps its published constants; a folder or an npz has its own, from its training images
    assert loaded["folder"].info.mean == loaded["npz"].info.mean and loaded["folder"].info.std == loaded["npz"].info.std
    assert loaded["folder"].info.mean[0] == pytest.approx(0.1307, abs=0.01)
    assert loaded["folder"].info.std[0] == pytest.approx(0.3081, abs=0.01)

    r1 = by_name("R1")
    cpu = torch.device("cpu")

    def trial(splits):
        result = train(prepare_model(r1, 0, cpu), r1.recipe, to_device(splits, cpu), seed=0)
        return result.val_acc, result.test_acc, result.final_loss

    folder_result = trial(loaded["folder"])
    assert trial(loaded["npz"]) == folder_result
    assert folder_result[1] > 0.8  # R1 learns 1,667 MNIST images in one epoch
    # with the same normalisation, the IDX files give the very same trial too
    same_norm = dataclasses.replace(loaded["idx"].info, mean=loaded["folder"].info.mean, std=loaded["folder"].info.std)
    assert trial(dataclasses.replace(loaded["idx"], info=same_norm)) == folder_result
    # and the folder, once cached, the same tensors again
    again = data_mod.load("folder", folder, cache_dir=tmp_path / "cache")
    assert all(torch.equal(getattr(again, k), getattr(loaded["folder"], k)) for k in data_mod.TENSORS)
