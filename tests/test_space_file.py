"""nas.space.space_file: reading a search space file, one line naming the file and the key for anything malformed,
and every key declared."""
import pytest

from nas.space.space_file import SpaceError, load_space
from tests.conftest import write_space


@pytest.mark.parametrize("edit, match", [
    (lambda t: t.replace("kernel = 3", "kernal = 3"), r"kernal"),
    (lambda t: t.replace("kernel = 3", "kernel = []"), r"kernel.*empty"),
    (lambda t: t.replace("width_growth = { low = 1.0, high = 1.5 }", "width_growth = { low = 1.5, high = 1.0 }"),
     r"width_growth.*above"),
    (lambda t: t.replace('activation = "relu"', 'activation = ["tanh"]'), r"activation"),
    (lambda t: t.replace("batch_size = 32", 'batch_size = ["big"]'), r"batch_size"),
    (lambda t: t.replace("[recipe]", "[recipes]"), r"recipes"),
    (lambda t: t + "\n[[oops", r"not valid TOML"),
    (lambda t: t.replace("kernel = 3", 'kernel = "auto"'), r"kernel.*expected int"),
    (lambda t: t.replace("dirac = true", "dirac = 1"), r"\[recipe\]\.dirac: expected bool"),
    (lambda t: t.replace("bn_momentum = 0.1", "bn_momentum = 0.0"), r"\[recipe\]\.bn_momentum.*outside"),
    (lambda t: t.replace("bn_momentum = 0.1", "bn_momentum = [0.1, 1.5]"), r"\[recipe\]\.bn_momentum.*outside"),
    (lambda t: t.replace("bn_bias_lr = 1.0", "bn_bias_lr = { low = 0.0, high = 64.0 }"),
     r"\[recipe\]\.bn_bias_lr.low.*outside"),
    (lambda t: t.replace("bn_freeze_scale = false", 'bn_freeze_scale = "yes"'), r"bn_freeze_scale: expected bool"),
    (lambda t: t.replace("muon_lr = 0.2", "muon_lr = -0.1"), r"\[recipe\]\.muon_lr.*outside"),
])
def test_malformed_space_names_the_key(tmp_path, edit, match):
    with pytest.raises(SpaceError, match=match) as err:
        load_space(write_space(tmp_path, edit))
    assert "\n" not in str(err.value)


def test_missing_space_file(tmp_path):
    with pytest.raises(SpaceError, match="not found"):
        load_space(tmp_path / "nope.toml")


@pytest.mark.parametrize("key, section", [("pool_placement", "arch"), ("cycle_momentum", "recipe")])
def test_a_space_file_must_declare_every_key(tmp_path, key, section):
    def without_key(text):
        return "\n".join(line for line in text.splitlines() if not line.startswith(key))
    with pytest.raises(SpaceError, match=rf"\[{section}\]\.{key} is missing"):
        load_space(write_space(tmp_path, without_key))
