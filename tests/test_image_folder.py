"""nas.data.image_folder: listing an ImageFolder layout (list_folder) and reading it (read_folder): what is listed,
the order images are read in, and a damaged cache. (Decoding, resizing, the held-out sixth, the cache's keys and the
bad-folder errors are tested through nas.data.load in tests/test_sources.py.)"""
import numpy as np
import pytest
import torch

from nas.data import image_folder
from nas.data.sources import DataError


def _png(path, value=0):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 3), value, np.uint8), "L").save(path)
    return path


def test_only_image_files_of_visible_class_folders_with_images_are_listed(tmp_path):
    a, b = _png(tmp_path / "train" / "ant" / "1.png"), _png(tmp_path / "train" / "bee" / "2.PNG")
    (tmp_path / "train" / "ant" / "notes.txt").write_text("not an image")
    _png(tmp_path / "train" / ".hidden" / "3.png")
    (tmp_path / "train" / "cat").mkdir()  # no images: not a class
    assert image_folder.list_folder(tmp_path) == {"train": {"ant": [a], "bee": [b]}}  # no test/: no "test" key


@pytest.mark.parametrize("make, message", [
    (lambda root: None, "no such folder"),
    (lambda root: (root / "test" / "ant").mkdir(parents=True), "test: no images in any test/<class>/ folder"),
])
def test_a_missing_folder_or_an_empty_test_folder_is_one_line(tmp_path, make, message):
    root = tmp_path / "images"
    if message != "no such folder":
        for cls in ("ant", "bee"):
            _png(root / "train" / cls / "1.png")
    make(root)
    with pytest.raises(DataError, match=message) as e:
        image_folder.list_folder(root)
    assert "\n" not in str(e.value)


def test_images_are_read_in_file_name_order_across_classes(tmp_path):
    for name, cls, value in (("03.png", "ant", 3), ("01.png", "bee", 1), ("02.png", "ant", 2), ("00.png", "bee", 0)):
        _png(tmp_path / "train" / cls / name, value)
        _png(tmp_path / "test" / cls / name, value)
    raw = image_folder.read_folder(tmp_path)
    assert raw.x_test[:, 0, 0, 0].tolist() == [0, 1, 2, 3] and raw.y_test.tolist() == [1, 1, 0, 0]
    assert raw.classes == ("ant", "bee")


def test_a_damaged_cache_is_decoded_again_and_rewritten(tmp_path):
    root, cache = tmp_path / "images", tmp_path / "cache"
    for cls, value in (("ant", 10), ("bee", 20)):
        for part in ("train", "test"):
            _png(root / part / cls / "1.png", value)
    first = image_folder.read_folder(root, cache_dir=cache)
    (cached,) = cache.glob("*.pt")
    cached.write_bytes(b"not a torch file")
    again = image_folder.read_folder(root, cache_dir=cache)
    assert torch.equal(again.x_train, first.x_train) and again.classes == first.classes
    assert torch.load(cached, weights_only=True)["classes"] == ["ant", "bee"]  # written again
