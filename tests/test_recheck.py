"""bench/recheck.py rebuilds a trial's network as the search drew it, under the study's ceilings."""
import sys
import tomllib

import pytest

from nas.space.budget import count_flops, count_params
from nas.engine.ceilings import Ceilings
from nas.data import DataInfo
from nas.errors import UserError
from nas.space.space_file import DEFAULT_SPACE

sys.path.insert(0, str(DEFAULT_SPACE.parent.parent / "bench"))
import recheck  # noqa: E402

MNIST = DataInfo(source="mnist", shape=(1, 28, 28), classes=tuple("0123456789"), mean=(0.13,), std=(0.31,))
# a 25k draw of the default space whose widest fit under the budget is over its 8-MFLOP ceiling
DRAW = {"stem_convs": 2, "pools": 2, "block": "conv", "head": "conv1x1_gap", "width_growth": 1.0586,
        "budget_fill": 0.9874, "sgd_lr": 0.0956, "warmup": 0.316, "weight_decay": 1.7e-05, "label_smoothing": 0.034,
        "ema": 0.99}


def _rebuild(fixed: dict):
    raw = tomllib.loads(DEFAULT_SPACE.read_text())
    return recheck.rebuild(raw, DEFAULT_SPACE, DRAW, fixed, Ceilings(25_000, 8.0), MNIST).arch


def test_a_rebuild_fits_the_widths_under_the_studys_compute_ceiling():
    arch = _rebuild({})
    assert count_flops(arch) <= 8e6 and count_params(arch) == 19_148  # as the search drew it, not the 23,790 one


def test_a_variant_may_set_the_compute_ceiling():
    assert count_params(_rebuild({"max_mflops": 16})) == 23_790


def test_an_unknown_key_is_refused_naming_the_keys():
    with pytest.raises(UserError, match="max_mflops"):
        _rebuild({"no_such_key": 1})


def test_a_variant_may_set_the_param_budget():
    """At 100k params the draw takes the depth "auto" gives at 100k and is widened to its param target, budget_fill x
    100k = 98,740, which binds before 40 MFLOPs; under the study's own 8-MFLOP ceiling the compute ceiling binds."""
    arch = _rebuild({"max_params": 100_000, "max_mflops": 40})
    assert count_params(arch) == 97_574 and count_flops(arch) <= 40e6
    assert count_params(_rebuild({"max_params": 100_000})) == 21_987


def test_a_variant_may_train_longer_and_its_epochs_are_not_a_space_key():
    fixed = {"epochs": 2, "stem_convs": 1}
    assert recheck.pop_epochs(fixed, 1) == 2 and fixed == {"stem_convs": 1}
    assert recheck.pop_epochs({}, 1) == 1
    with pytest.raises(UserError, match="epochs"):
        recheck.pop_epochs({"epochs": 0}, 1)
