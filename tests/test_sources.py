"""Each kind of source on tiny files the tests write in its own format: torchvision's sets (IDX, EMNIST's transposed
IDX, CIFAR's pickled batches, SVHN's .mat), npz arrays and image folders; and each bad input's one-line error."""
import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import torch

from nas import data as data_mod
from nas.data import image_folder, sources
from nas.data import DataError
from nas.data.sources import DATASETS

N_TRAIN, N_TEST = 36, 12


def _rng(seed=0):
    return np.random.default_rng(seed)


def _idx_images(x: np.ndarray) -> bytes:
    return struct.pack(">IIII", 2051, len(x), *x.shape[1:]) + x.astype(np.uint8).tobytes()


def _idx_labels(y: np.ndarray) -> bytes:
    return struct.pack(">II", 2049, len(y)) + y.astype(np.uint8).tobytes()


def _write_idx_set(root, dataset, images, labels, gz):
    raw = sources.raw_dir(dataset, root)
    raw.mkdir(parents=True, exist_ok=True)
    names = sources.file_names(dataset)  # train images, train labels, test images, test labels
    for name, content in zip(names, (_idx_images(images[0]), _idx_labels(labels[0]),
                                     _idx_images(images[1]), _idx_labels(labels[1]))):
        (raw / (name + ".gz" if gz else name)).write_bytes(gzip.compress(content) if gz else content)


# -- torchvision's sets --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dataset", [d for d, s in DATASETS.items() if s.kind in ("idx", "emnist")])
def test_the_idx_sets_class_names_are_torchvisions(dataset):
    import torchvision.datasets as tvd

    s = DATASETS[dataset]
    names = tvd.EMNIST.classes_split_dict[s.split] if s.kind == "emnist" else getattr(tvd, s.cls).classes
    assert s.classes == tuple(c for c in names if c != "N/A")


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_kmnist_reads_its_idx_files_as_they_are(tmp_path, gz):
    images = [_rng(1).integers(0, 256, (n, 28, 28)) for n in (N_TRAIN, N_TEST)]
    labels = [np.arange(n) % 10 for n in (N_TRAIN, N_TEST)]
    _write_idx_set(tmp_path, "kmnist", images, labels, gz)
    splits = data_mod.load("kmnist", tmp_path, download=False)
    assert splits.info.shape == (1, 28, 28) and splits.info.classes[:3] == ("o", "ki", "su")
    assert splits.info.source == "kmnist" and splits.x_test.dtype == torch.uint8
    assert torch.equal(splits.x_test[:, 0], torch.from_numpy(images[1].astype(np.uint8)))
    every = torch.from_numpy(images[0].astype(np.float64)) / 255  # stats are those of the whole training set
    assert splits.info.mean[0] == pytest.approx(float(every.mean()), abs=1e-6)
    assert splits.info.std[0] == pytest.approx(float(every.std(unbiased=False)), abs=1e-6)


@pytest.mark.parametrize("split, n_classes, low", [("letters", 26, 1), ("balanced", 47, 0)])
def test_emnist_images_are_turned_upright_and_letters_counted_from_zero(tmp_path, split, n_classes, low):
    upright = np.zeros((N_TRAIN, 28, 28), np.uint8)
    upright[:, 0, :] = 255  # a bar along the top row
    labels = [low + np.arange(n) % n_classes for n in (N_TRAIN, N_TEST)]
    # EMNIST's files hold each image transposed (torchvision reads them so, and leaves them so)
    _write_idx_set(tmp_path, f"emnist-{split}", [upright.transpose(0, 2, 1), upright[:N_TEST].transpose(0, 2, 1)],
                   labels, gz=False)
    splits = data_mod.load(f"emnist-{split}", tmp_path, download=False)
    assert (splits.x_test[:, 0, 0, :] == 255).all() and (splits.x_test[:, 0, 1:, :] == 0).all()
    assert torch.equal(splits.y_test, torch.from_numpy(labels[1] - low))
    assert len(splits.info.classes) == n_classes
    assert splits.info.classes[0] == ("a" if split == "letters" else "0")


def test_emnist_letter_zero_is_out_of_range(tmp_path):
    images = [np.zeros((n, 28, 28)) for n in (N_TRAIN, N_TEST)]
    _write_idx_set(tmp_path, "emnist-letters", images, [np.arange(N_TRAIN) % 26, np.ones(N_TEST)], gz=False)
    with pytest.raises(DataError, match="emnist-letters-train-labels-idx1-ubyte: label 0 is out of range 1-26"):
        data_mod.load("emnist-letters", tmp_path, download=False)


def _cifar_batch(path, x, y, label_key):
    with open(path, "wb") as f:
        pickle.dump({"data": x.reshape(len(x), -1), label_key: list(map(int, y)), "batch_label": "synthetic"}, f)


def _write_cifar(root, dataset, x_train, y_train, x_test, y_test):
    train, test, meta, names_key = sources.CIFAR_FILES[dataset]
    label_key = sources.DATASETS[dataset].split
    folder = root / sources.DATASETS[dataset].folder
    folder.mkdir(parents=True)
    for i, name in enumerate(train):  # the training set spread over the batches, as CIFAR-10's
        _cifar_batch(folder / name, x_train[i::len(train)], y_train[i::len(train)], label_key)
    _cifar_batch(folder / test[0], x_test, y_test, label_key)
    n = 10 if dataset == "cifar10" else 100
    with open(folder / meta, "wb") as f:
        pickle.dump({names_key: [f"class{i}" for i in range(n)]}, f)


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_cifar_reads_the_pickled_batches(tmp_path, dataset):
    n = 10 if dataset == "cifar10" else 100
    x_train = _rng(2).integers(0, 256, (50, 3, 32, 32), dtype=np.uint8)
    x_test = _rng(3).integers(0, 256, (20, 3, 32, 32), dtype=np.uint8)
    y_train, y_test = np.arange(50) % n, np.arange(20) % n
    _write_cifar(tmp_path, dataset, x_train, y_train, x_test, y_test)
    splits = data_mod.load(dataset, tmp_path, download=False)
    assert splits.info.shape == (3, 32, 32) and len(splits.info.classes) == n and splits.info.classes[1] == "class1"
    assert len(splits.info.mean) == 3
    # each row of a batch is 1,024 red, then green, then blue values, row by row (torchvision's reshape)
    assert torch.equal(splits.x_test, torch.from_numpy(x_test)) and torch.equal(splits.y_test, torch.from_numpy(y_test))
    batches = sources.CIFAR_FILES[dataset][0]
    expected = np.concatenate([x_train[i::len(batches)] for i in range(len(batches))])
    rebuilt = torch.cat([splits.x_train, splits.x_val])
    assert sorted(map(bytes, rebuilt.numpy())) == sorted(map(bytes, expected))


def test_a_corrupt_cifar_batch_is_named(tmp_path):
    x = np.zeros((20, 3, 32, 32), np.uint8)
    _write_cifar(tmp_path, "cifar10", x, np.arange(20) % 10, x, np.arange(20) % 10)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(b"not a pickle")
    with pytest.raises(DataError, match=f"{path}: cannot be read"):
        data_mod.load("cifar10", tmp_path, download=False)


def test_svhn_reads_the_mat_files_and_maps_label_10_to_0(tmp_path):
    import scipy.io

    xs = {"train": _rng(4).integers(0, 256, (32, 32, 3, 30), dtype=np.uint8),
          "test": _rng(5).integers(0, 256, (32, 32, 3, 12), dtype=np.uint8)}
    ys = {"train": 1 + np.arange(30).reshape(-1, 1) % 10, "test": 1 + np.arange(12).reshape(-1, 1) % 10}
    for part in ("train", "test"):
        scipy.io.savemat(tmp_path / f"{part}_32x32.mat", {"X": xs[part], "y": ys[part]})
    splits = data_mod.load("svhn", tmp_path, download=False)
    assert splits.info.shape == (3, 32, 32)
    # X is (H, W, C, N): torchvision transposes it with (3, 2, 0, 1)
    assert torch.equal(splits.x_test, torch.from_numpy(xs["test"].transpose(3, 2, 0, 1).copy()))
    assert splits.y_test.tolist() == [v % 10 for v in ys["test"].ravel()]


@pytest.mark.parametrize("dataset, cls, kwargs", [
    ("cifar10", "CIFAR10", [{"train": True}, {"train": False}]),
    ("svhn", "SVHN", [{"split": "train"}, {"split": "test"}]),
    ("emnist-letters", "EMNIST", [{"split": "letters", "train": True}, {"split": "letters", "train": False}]),
])
def test_missing_files_are_downloaded_by_torchvisions_own_class(tmp_path, monkeypatch, dataset, cls, kwargs):
    import torchvision.datasets as tvd

    calls = []
    monkeypatch.setattr(tvd, cls, lambda root, **kw: calls.append(kw))
    with pytest.raises(DataError, match="the download did not provide them"):
        data_mod.load(dataset, tmp_path)
    assert calls == [{**k, "download": True} for k in kwargs]


# -- npz -----------------------------------------------------------------------------------------------------------
def _npz(tmp_path, name="d.npz", **override):
    rng = _rng(6)
    arrays = {"x_train": rng.integers(0, 256, (N_TRAIN, 12, 10), dtype=np.uint8), "y_train": np.arange(N_TRAIN) % 3,
              "x_test": rng.integers(0, 256, (N_TEST, 12, 10), dtype=np.uint8), "y_test": np.arange(N_TEST) % 3,
              **override}
    path = tmp_path / name
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path, arrays


@pytest.mark.parametrize("layout", ["NHW", "NHWC", "NCHW", "NHWC-rgb", "float01", "float255"])
def test_npz_layouts_and_types_give_the_same_uint8_images(tmp_path, layout):
    rng = _rng(7)
    channels = 3 if layout == "NHWC-rgb" else 1
    nchw = {k: rng.integers(0, 256, (n, channels, 12, 10), dtype=np.uint8) for k, n in (("x_train", N_TRAIN),
                                                                                          ("x_test", N_TEST))}
    stored = {
        "NHW": lambda x: x[:, 0], "NHWC": lambda x: x.transpose(0, 2, 3, 1), "NCHW": lambda x: x,
        "NHWC-rgb": lambda x: x.transpose(0, 2, 3, 1), "float01": lambda x: x[:, 0].astype(np.float32) / 255,
        "float255": lambda x: x.astype(np.float64),
    }[layout]
    path, _ = _npz(tmp_path, x_train=stored(nchw["x_train"]), x_test=stored(nchw["x_test"]))
    splits = data_mod.load("npz", path)
    assert splits.info.source == f"npz:{path.resolve()}" and splits.info.shape == (channels, 12, 10)
    assert splits.info.classes == ("0", "1", "2") and splits.x_test.dtype == torch.uint8
    assert torch.equal(splits.x_test, torch.from_numpy(nchw["x_test"]))


def test_npz_class_names_come_from_its_classes_array(tmp_path):
    path, _ = _npz(tmp_path, classes=np.array(["bolt", "nut", "washer", "spare"]))
    assert data_mod.load("npz", path).info.classes == ("bolt", "nut", "washer", "spare")


@pytest.mark.parametrize("override, message", [
    ({"y_test": None}, "missing arrays y_test"),
    ({"y_train": np.arange(N_TRAIN - 1) % 3}, f"x_train holds {N_TRAIN} images but y_train {N_TRAIN - 1} labels"),
    ({"y_test": np.arange(N_TEST) % 4}, "y_test has label 3, out of range 0-2"),
    ({"y_train": -(np.arange(N_TRAIN) % 3)}, "y_train has label -1, out of range"),
    ({"x_test": np.full((N_TEST, 12, 10), np.nan)}, "x_test holds NaN or infinite values"),
    ({"y_train": np.full(N_TRAIN, np.nan)}, "y_train holds NaN"),
    ({"y_train": np.zeros(N_TRAIN, np.int64)}, "one class only"),
    ({"x_test": np.zeros((N_TEST, 14, 10), np.uint8)}, "x_train images are (1, 12, 10)"),
    ({"x_train": np.full((N_TRAIN, 12, 10), 300.0)}, "x_train values run from 300 to 300"),
], ids=["missing-key", "lengths", "label-range", "negative-label", "nan-images", "nan-labels", "one-class",
        "shapes", "value-range"])
def test_bad_npz_is_one_line_naming_the_file(tmp_path, override, message):
    path, _ = _npz(tmp_path, **override)
    with pytest.raises(DataError) as e:
        data_mod.load("npz", path)
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value) and "\n" not in str(e.value)


def test_unreadable_npz_is_named(tmp_path):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match=f"{path}: cannot be read as an npz file"):
        data_mod.load("npz", path)
    with pytest.raises(DataError, match="no such file"):
        data_mod.load("npz", tmp_path / "absent.npz")


# -- image folders -------------------------------------------------------------------------------------------------
def _image(path, mode="L", size=(10, 12), seed=0):
    from PIL import Image

    rng = _rng(seed)
    shape = (size[1], size[0]) + (() if mode == "L" else (3,))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
    return path


def _folder(root, classes=("cat", "dog", "eel"), per_class=6, test=True, mode="L", ext=".png"):
    for c in classes:
        for i in range(per_class):
            _image(root / "train" / c / f"{c}{i:03d}{ext}", mode, seed=hash((c, i)) % 1000)
        if test:
            _image(root / "test" / c / f"{c}t{ext}", mode, seed=1)
    return root


def test_folder_classes_come_from_the_folder_names_and_images_keep_their_pixels(tmp_path):
    from PIL import Image

    root = _folder(tmp_path / "parts")
    splits = data_mod.load("folder", root, val_size=0)
    assert splits.info.source == f"folder:{root.resolve()}"
    assert splits.info.classes == ("cat", "dog", "eel") and splits.info.shape == (1, 12, 10)
    assert len(splits.x_train) == 18 and splits.y_test.tolist() == [0, 1, 2]
    first = np.array(Image.open(root / "test" / "cat" / "catt.png"))
    assert torch.equal(splits.x_test[0, 0], torch.from_numpy(first))


@pytest.mark.parametrize("ext", [".jpg", ".bmp", ".webp"])
def test_folder_reads_jpeg_bmp_and_webp_in_colour(tmp_path, ext):
    splits = data_mod.load("folder", _folder(tmp_path / "f", mode="RGB", ext=ext), val_size=0)
    assert splits.info.shape == (3, 12, 10) and len(splits.info.mean) == 3 and len(splits.x_train) == 18


def test_mixed_grey_and_colour_are_converted_to_rgb_with_one_line(tmp_path, capsys):
    root = _folder(tmp_path / "f")
    grey = root / "train" / "dog" / "dog000.png"
    _image(root / "train" / "dog" / "dog000.png", "RGB", seed=3)
    splits = data_mod.load("folder", root, val_size=0)
    out = capsys.readouterr().out
    assert out == f"{root.resolve()}: 20 grey and 1 colour images; the grey ones are converted to RGB\n"
    assert splits.info.shape == (3, 12, 10)
    from PIL import Image
    cat = np.array(Image.open(root / "test" / "cat" / "catt.png"))
    assert all(torch.equal(splits.x_test[0, c], torch.from_numpy(cat)) for c in range(3)) and grey.exists()


def test_without_test_folder_a_stratified_sixth_is_held_out(tmp_path):
    root = _folder(tmp_path / "f", per_class=12, test=False)
    splits = data_mod.load("folder", root, val_size=0)
    assert splits.y_test.bincount().tolist() == [2, 2, 2] and len(splits.x_train) == 30
    again = data_mod.load("folder", root, val_size=0)
    assert torch.equal(again.x_test, splits.x_test)  # seeded


def test_image_size_resizes_once_at_load_and_sizes_may_differ(tmp_path, capsys):
    root = _folder(tmp_path / "f")
    _image(root / "train" / "cat" / "big.png", size=(40, 30))
    splits = data_mod.load("folder", root, val_size=0)
    assert splits.info.shape == (1, 12, 10) and "resized to 12x10 (the most common" in capsys.readouterr().out
    splits = data_mod.load("folder", root, val_size=0, image_size=16)
    assert splits.info.shape == (1, 16, 16) and splits.x_train.shape[1:] == (1, 16, 16)


@pytest.mark.parametrize("case, message", [
    ("empty", "train: no images"),
    ("one-class", "one class only (cat)"),
    ("no-train", "no train/ folder"),
    ("corrupt", "dog001.png: cannot be decoded as an image"),
    ("test-class", "test: class 'fox' is not in"),
])
def test_bad_folders_are_one_line_naming_the_place(tmp_path, case, message):
    root = tmp_path / "f"
    if case == "empty":
        (root / "train" / "cat").mkdir(parents=True)
        (root / "train" / "cat" / "notes.txt").write_text("no images here")
    elif case == "one-class":
        _folder(root, classes=("cat",))
    elif case == "no-train":
        _folder(root)
        os.rename(root / "train", root / "training")
    elif case == "corrupt":
        _folder(root)
        (root / "train" / "dog" / "dog001.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    else:
        _folder(root)
        _image(root / "test" / "fox" / "f.png")
    with pytest.raises(DataError) as e:
        data_mod.load("folder", root, cache_dir=tmp_path / "cache")
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "cache").exists()  # nothing written for bad data


def test_a_folder_is_decoded_once_then_read_from_the_cache_until_a_file_changes(tmp_path, monkeypatch):
    root, cache = _folder(tmp_path / "f"), tmp_path / "results" / ".cache"
    first = data_mod.load("folder", root, cache_dir=cache)
    assert len(list(cache.glob("*.pt"))) == 1
    decoded, real = [], image_folder._decode
    monkeypatch.setattr(image_folder, "_decode", lambda path: decoded.append(path) or real(path))
    second = data_mod.load("folder", root, cache_dir=cache)
    assert decoded == [] and all(torch.equal(getattr(first, k), getattr(second, k)) for k in data_mod.TENSORS)
    assert second.info == first.info
    data_mod.load("folder", root, cache_dir=cache, image_size=8)  # another size: another entry
    assert len(decoded) == 21 and len(list(cache.glob("*.pt"))) == 2
    changed = root / "train" / "cat" / "cat000.png"
    _image(changed, seed=99)
    os.utime(changed, ns=(1, 1))
    decoded.clear()
    third = data_mod.load("folder", root, cache_dir=cache)
    assert len(decoded) == 21 and not torch.equal(third.x_train, first.x_train)


# -- load's own checks -------------------------------------------------------------------------------------------
def test_unknown_dataset_lists_the_known_ones_and_image_size_has_a_floor(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'imagenet'; known: mnist, fashion-mnist, kmnist.*folder, npz"):
        data_mod.load("imagenet", tmp_path)
    path, _ = _npz(tmp_path)
    with pytest.raises(DataError, match="--image-size 7: must be at least 8"):
        data_mod.load("npz", path, image_size=7)
    with pytest.raises(DataError, match="--dataset folder needs --data-dir"):
        data_mod.load("folder")


def test_a_small_set_holds_out_a_sixth_and_resizes(tmp_path):
    path, arrays = _npz(tmp_path)
    splits = data_mod.load("npz", path, image_size=8)
    assert len(splits.x_val) == N_TRAIN // 6 and splits.info.shape == (1, 8, 8) and splits.x_val.shape[1:] == (1, 8, 8)


def test_channel_stats_match_a_float_computation():
    x = torch.from_numpy(_rng(8).integers(0, 256, (40, 3, 9, 9), dtype=np.uint8))
    mean, std = data_mod.channel_stats(x)
    f = x.double() / 255
    assert mean == pytest.approx(f.mean((0, 2, 3)).tolist(), abs=1e-6)
    assert std == pytest.approx(f.std((0, 2, 3), unbiased=False).tolist(), abs=1e-6)


def test_normalise_per_channel_and_data_info_round_trips():
    info = data_mod.DataInfo("npz:/x.npz", (3, 2, 2), ("a", "b"), (0.1, 0.2, 0.3), (0.5, 0.25, 1.0))
    assert data_mod.DataInfo.from_dict(info.to_dict()) == info
    x = torch.full((1, 3, 2, 2), 51, dtype=torch.uint8)  # 0.2 after scaling
    out = data_mod.normalise(x, info)
    assert out.dtype == torch.float32 and out.is_contiguous(memory_format=torch.channels_last)
    assert out[0, :, 0, 0].tolist() == pytest.approx([0.2, 0.0, -0.1])


def test_cli_reports_bad_data_in_one_line_and_exit_2(tmp_path, capsys):
    from nas.cli import main

    _folder(tmp_path / "f", classes=("only",))
    rc = main(["evaluate", "--spec", "R2", "--dataset", "folder", "--data-dir", str(tmp_path / "f"), "--threads", "1",
               "--seeds", "1", "--results-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "one class only" in err
