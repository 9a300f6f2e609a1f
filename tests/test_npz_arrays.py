"""nas.data.npz_arrays: arrays checked and read into uint8 (N, C, H, W) images and int64 labels by raw_from_arrays,
one line naming the file and the array for anything unusable. (read_npz's layouts, class names and file errors are
tested through nas.data.load in tests/test_sources.py.)"""
import numpy as np
import pytest
import torch

from nas.data.npz_arrays import raw_from_arrays
from nas.data.sources import DataError


def _arrays(**override):
    rng = np.random.default_rng(0)
    return {"x_train": rng.integers(0, 256, (12, 6, 5), dtype=np.uint8), "y_train": np.arange(12) % 3,
            "x_test": rng.integers(0, 256, (6, 6, 5), dtype=np.uint8), "y_test": np.arange(6) % 3, **override}


def test_labels_may_be_a_column_or_whole_floats_and_integer_images_0_to_255():
    arrays = _arrays()
    raw = raw_from_arrays("a.npz", _arrays(y_train=arrays["y_train"].reshape(-1, 1).astype(np.float32),
                                           x_test=arrays["x_test"].astype(np.int32)))
    assert raw.y_train.dtype == torch.int64 and raw.y_train.tolist() == arrays["y_train"].tolist()
    assert raw.x_test.dtype == torch.uint8 and torch.equal(raw.x_test[:, 0], torch.from_numpy(arrays["x_test"]))
    assert raw.classes == ("0", "1", "2")


def test_class_names_set_the_label_range():
    raw = raw_from_arrays("a.npz", _arrays(), np.array(["a", "b", "c", "d"]))
    assert raw.classes == ("a", "b", "c", "d")
    with pytest.raises(DataError, match=r"^a.npz: y_train has label 2, out of range 0-1$"):
        raw_from_arrays("a.npz", _arrays(), np.array(["a", "b"]))


@pytest.mark.parametrize("override, message", [
    ({"y_train": np.arange(12) % 3 + 0.5}, "y_train holds labels that are not whole numbers"),
    ({"y_test": np.array(["a"] * 6)}, "y_test has dtype <U1; expected integer labels"),
    ({"y_test": np.zeros((6, 2), np.int64)}, "y_test is (6, 2); expected one label per image"),
    ({"x_train": np.zeros((12, 6, 5, 2), np.uint8)}, "x_train is (12, 6, 5, 2); expected NHW, NHWC or NCHW with 1 or 3"),
    ({"x_test": np.zeros((6, 30), np.uint8)}, "x_test is (6, 30); expected NHW, NHWC or NCHW images"),
    ({"x_test": np.full((6, 6, 5), 256, np.int64)}, "x_test values run from 256 to 256; expected 0-255"),
    ({"x_train": np.zeros((12, 6, 5), np.complex64)}, "x_train has dtype complex64; expected uint8 or float"),
    ({"x_test": np.zeros((0, 6, 5), np.uint8), "y_test": np.zeros(0, np.int64)}, "x_test holds no images"),
])
def test_unusable_arrays_are_one_line_naming_the_file_and_the_array(override, message):
    with pytest.raises(DataError) as e:
        raw_from_arrays("a.npz", _arrays(**override))
    assert str(e.value).startswith(f"a.npz: {message}") and "\n" not in str(e.value)
