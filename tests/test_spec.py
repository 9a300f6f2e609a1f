import json

import pytest

from nas.space.spec import ArchSpec, Candidate, SpecError, TrainRecipe
from nas.space.blocks import Conv, GlobalAvgPool, Linear, Pool, Residual
from tests.conftest import REFERENCES


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_reference_round_trips_exactly(name):
    c = REFERENCES[name]
    again = Candidate.from_json(c.to_json())
    assert again == c
    assert again.id == c.id
    assert again.to_json() == c.to_json()


def test_id_is_stable_and_depends_on_content():
    a = Candidate(ArchSpec(blocks=(Conv(8, act="relu"), Pool(), GlobalAvgPool(), Linear(10))))
    b = Candidate(ArchSpec(blocks=(Conv(9, act="relu"), Pool(), GlobalAvgPool(), Linear(10))))
    assert a.id == Candidate.from_dict(json.loads(a.to_json())).id
    assert a.id != b.id
    assert a.id != Candidate(a.arch, TrainRecipe(lr=0.01)).id
    # the display name is not part of the identity
    assert a.id == Candidate(a.arch, a.recipe, name="x").id


def test_nested_residual_round_trips():
    arch = ArchSpec(blocks=(Conv(8), Residual(body=(Conv(8, bn=True, act="gelu"),), shortcut=(Conv(8, k=1),)),
                            GlobalAvgPool(), Linear(10)))
    assert ArchSpec.from_dict(json.loads(json.dumps(arch.to_dict()))) == arch


@pytest.mark.parametrize("mutate, key", [
    (lambda d: d["arch"]["blocks"][0].update(widht=3), "widht"),
    (lambda d: d["arch"]["blocks"][0].update(out="8"), "out"),
    (lambda d: d["arch"]["blocks"][0].update(act="tanh"), "act"),
    (lambda d: d["arch"]["blocks"][0].update(kind="lstm"), "kind"),
    (lambda d: d["recipe"].update(optimizer="rmsprop"), "optimizer"),
    (lambda d: d["recipe"].update(batch_size=0), "recipe"),
    (lambda d: d.update(extra=1), "extra"),
    (lambda d: d["arch"].pop("blocks"), "blocks"),
])
def test_bad_spec_names_the_key(mutate, key):
    d = json.loads(REFERENCES["R1"].to_json())
    mutate(d)
    with pytest.raises(SpecError, match=key):
        Candidate.from_dict(d)


def test_malformed_json_is_a_spec_error():
    with pytest.raises(SpecError, match="not valid JSON"):
        Candidate.from_json("{oops")
