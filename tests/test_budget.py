"""nas.space.budget: exact parameter and FLOP counts, peak activation memory and the per-layer costs (latency:
tests/test_latency.py)."""
from nas.space.budget import count_flops, count_params, layer_costs, peak_activation_bytes
from nas.space.spec import ArchSpec
from nas.space.blocks import Conv, Dropout, Flatten, GlobalAvgPool, Linear, Pool, Residual
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



# -- peak activation memory, computed by hand: values alive at once, x 4 bytes at fp32 ----------------------------
def test_peak_of_a_plain_chain_is_the_largest_input_plus_output():
    spec = ArchSpec(blocks=(Conv(4, act="relu", bn=True), Pool(), Flatten(), Dropout(0.5), Linear(3)),
                    input_shape=(1, 8, 8), num_classes=3)
    # conv: 64 in + 256 out = 320; pool: 256 + 64 = 320; flatten and dropout in place: 64; linear: 64 + 3
    assert peak_activation_bytes(spec) == 320 * 4
    assert peak_activation_bytes(spec, bytes_per_value=1) == 320


def test_peak_counts_the_input_of_a_widening_first_layer():
    spec = ArchSpec(blocks=(Conv(2), Conv(6), GlobalAvgPool(), Linear(2)), input_shape=(3, 4, 4), num_classes=2)
    # conv 3->2: 48 + 32 = 80; conv 2->6: 32 + 96 = 128; gap: 96 + 6 = 102; linear 6 + 2
    assert peak_activation_bytes(spec) == 128 * 4


def test_peak_holds_a_residual_input_while_its_body_runs():
    body = (Conv(8), Conv(4))
    identity = ArchSpec(blocks=(Residual(body=body), GlobalAvgPool(), Linear(2)), input_shape=(4, 4, 4), num_classes=2)
    # body conv 4->8 with the block's input (64) held: 64 + 64 + 128 = 256; conv 8->4: 64 + 128 + 64 = 256
    assert peak_activation_bytes(identity) == 256 * 4
    projected = ArchSpec(blocks=(Residual(body=(Conv(2),), shortcut=(Conv(2, k=1),)), GlobalAvgPool(), Linear(2)),
                         input_shape=(4, 4, 4), num_classes=2)
    # body: 64 held + 64 in + 32 out = 160; shortcut with the body's 32 held: 32 + 64 + 32 = 128; add: 64
    assert peak_activation_bytes(projected) == 160 * 4


def test_peak_of_the_references():
    # R1: its first max pool holds the 16x28x28 conv output and its 16x14x14 result
    assert peak_activation_bytes(REFERENCES["R1"].arch) == (16 * 28 * 28 + 16 * 14 * 14) * 4


def test_layer_costs_add_up_to_the_totals():
    spec = REFERENCES["R4"].arch
    rows = layer_costs(spec)
    assert [r.where for r in rows] == [f"blocks[{i}]" for i in range(len(spec.blocks))]
    assert sum(r.params for r in rows) == count_params(spec)
    assert sum(r.flops for r in rows) == count_flops(spec)
    assert rows[-1].shape == (10,) and rows[-1].activation_bytes == 40
