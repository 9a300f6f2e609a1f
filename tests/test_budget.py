from nas.budget import count_flops, count_params, within_budget
from nas.spec import ArchSpec, Conv, Flatten, Linear, Pool
from tests.conftest import REFERENCES

EXPECTED = {"R1": 20_586, "R2": 8_530, "R4": 23_398}


def test_reference_counts_are_exact():
    assert {name: count_params(REFERENCES[name].arch) for name in EXPECTED} == EXPECTED


def test_flops_scale_with_resolution_not_params():
    small = ArchSpec(blocks=(Conv(8, act="relu"), Pool(), Pool(), Flatten(), Linear(10)), input_shape=(1, 28, 28))
    big = ArchSpec(blocks=(Conv(8, act="relu"), Pool(), Pool(), Flatten(), Linear(10)), input_shape=(1, 56, 56))
    # conv: 2 * 28*28 * 8 * 9 multiply-adds; linear: 2 * 392 * 10
    assert count_flops(small) == 2 * 28 * 28 * 8 * 9 + 2 * 392 * 10
    assert count_flops(big) > 3 * count_flops(small)


def test_budget_is_a_strict_ceiling():
    assert within_budget(24_999, 25_000)
    assert not within_budget(25_000, 25_000)

