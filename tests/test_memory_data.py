"""nas.data.memory_data: data handed over in memory (arrays, tensors or a dataset of (image, label) pairs) checked and
saved once as an npz file named by a hash of the images, labels and class names, a stratified sixth held out as the
test set when none is given; one-line DataErrors for anything unusable."""
from pathlib import Path

import numpy as np
import pytest
import torch

from nas.data.memory_data import PREFIX, is_in_memory, save_npz
from nas.data.npz_arrays import read_npz
from nas.data.sources import DataError


def _arrays(n=60, seed=0):
    """n 5x5 grey images whose first pixel is their index, and labels 0-2, 20 of each."""
    x = np.random.default_rng(seed).integers(0, 256, (n, 5, 5), dtype=np.uint8)
    x[:, 0, 0] = np.arange(n)
    return x, np.arange(n) % 3


class Pairs:
    """A torchvision-style dataset: (image, label) pairs and class names."""

    classes = ["ant", "bee", "cat"]

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return torch.from_numpy(self.x[i]), int(self.y[i])


@pytest.mark.parametrize("data, in_memory", [("mnist", False), ("/d/leaves.npz", False), (Path("/d/images"), False),
                                             (_arrays(), True), (Pairs(*_arrays()), True)])
def test_names_and_paths_are_not_in_memory_arrays_and_datasets_are(data, in_memory):
    assert is_in_memory(data) is in_memory


def test_without_test_images_a_stratified_sixth_of_each_class_is_held_out(tmp_path):
    x, y = _arrays()
    raw = read_npz(save_npz((x, y), tmp_path))
    assert raw.y_test.bincount().tolist() == [20 // 6] * 3
    assert raw.y_train.bincount().tolist() == [20 - 20 // 6] * 3
    shown = sorted(raw.x_train[:, 0, 0, 0].tolist() + raw.x_test[:, 0, 0, 0].tolist())
    assert shown == list(range(60))  # every image once, in one part or the other
    assert all(int(label) == int(i) % 3 for i, label in zip(raw.x_test[:, 0, 0, 0], raw.y_test))


def test_given_test_images_are_kept_as_they_are(tmp_path):
    (x, y), (x_test, y_test) = _arrays(), _arrays(12, seed=1)
    raw = read_npz(save_npz((x, y, x_test, y_test), tmp_path))
    assert torch.equal(raw.x_train[:, 0], torch.from_numpy(x)) and torch.equal(raw.x_test[:, 0], torch.from_numpy(x_test))
    assert raw.y_test.tolist() == y_test.tolist() and raw.classes == ("0", "1", "2")


def test_the_file_is_named_by_the_data_and_written_once(tmp_path):
    x, y = _arrays()
    path = save_npz((x, y), tmp_path)
    assert path.parent == tmp_path and path.name.startswith(PREFIX) and len(path.name) == len(PREFIX) + 12 + 4
    written = (path.stat().st_ino, path.stat().st_mtime_ns)
    assert save_npz((torch.from_numpy(x.copy()), torch.from_numpy(y.copy())), tmp_path) == path  # the same data
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == written  # kept, not written again
    y[0] = 1  # one label changed
    assert save_npz((x, y), tmp_path) != path
    named = save_npz(Pairs(*_arrays()), tmp_path)
    assert named != path  # the same images and labels, but class names


def test_a_dataset_of_pairs_is_stacked_and_its_class_names_kept(tmp_path):
    x, y = _arrays()
    raw = read_npz(save_npz(Pairs(x, y), tmp_path))
    assert raw.classes == ("ant", "bee", "cat") and len(raw.x_train) + len(raw.x_test) == 60


class Unequal(Pairs):
    def __getitem__(self, i):
        return torch.zeros(1, 5, 5 + i % 2), 0


class NotPairs(Pairs):
    def __getitem__(self, i):
        return torch.zeros(1, 5, 5)


@pytest.mark.parametrize("data, message", [
    ({"x": 1}, "expected a dataset name, .*; got dict"),
    ((1, 2, 3), "expected .*; got tuple of 3 items"),
    ((np.zeros((6, 5, 5)), np.zeros(5)), "x_train holds 6 images but y_train 5 labels"),
    (Pairs(np.zeros((0, 5, 5)), []), "the dataset holds no images"),
    (NotPairs(*_arrays()), "item 0 of the dataset is a Tensor, not an \\(image, label\\) pair"),
    (Unequal(*_arrays()), "the dataset's images have 2 shapes \\(\\(1, 5, 5\\), \\(1, 5, 6\\)...\\); resize them"),
])
def test_unusable_data_is_one_line_saying_what_is_wrong(tmp_path, data, message):
    with pytest.raises(DataError, match=f"^data: {message}") as e:
        save_npz(data, tmp_path)
    assert "\n" not in str(e.value) and not list(tmp_path.iterdir())
