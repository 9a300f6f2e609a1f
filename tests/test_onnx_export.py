"""nas.deploy.onnx_export: every reference network and a network of every block kind, exported with its normalisation inside,
computes in onnxruntime what it computes in PyTorch; the files carry their spec and data; damaged and foreign files are
refused with one line."""
import json

import onnx
import optuna
import pytest
import torch

from nas.deploy import onnx_deploy as deploy, export, onnx_export
from nas.space.blocks import KINDS, Conv, Dropout, Flatten, GlobalAvgPool, Linear, Pool, Residual
from nas.space.build import build
from nas.data import DataInfo
from nas.space.space_file import load_space
from nas.space.spec import ArchSpec, Candidate
from tests.conftest import REFERENCES, SPACE_FILES, foreign_model

optuna.logging.set_verbosity(optuna.logging.WARNING)
IMAGES = 200  # per round trip: enough to catch a wrong layer, few enough for a quick file


def info_for(arch: ArchSpec, source: str = "npz:/data/toy.npz") -> DataInfo:
    """Data with a normalisation far from the identity, so an export that left it out would not pass."""
    c = arch.input_shape[0]
    return DataInfo(source, tuple(arch.input_shape), tuple(f"c{i}" for i in range(arch.num_classes)),
                    tuple(0.2 + 0.1 * i for i in range(c)), tuple(0.25 + 0.05 * i for i in range(c)))


def trained_looking(arch: ArchSpec, seed: int) -> export.Normalised:
    """The network with random weights and random BatchNorm statistics (fresh ones are 0 and 1, which would hide a
    wrongly folded BatchNorm), wrapped with its normalisation."""
    net = build(arch, seed=seed)
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.2)
    return export.Normalised(net, info_for(arch)).eval()


def round_trip(candidate: Candidate, seed: int = 0) -> deploy.Agreement:
    """onnxruntime against PyTorch on random images, for the exported model of the candidate's network."""
    model = trained_looking(candidate.arch, seed)
    proto = onnx_export.model_proto(model, candidate, model.info)
    images = torch.randint(0, 256, (IMAGES, *candidate.arch.input_shape), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(seed))
    return deploy.compare(onnx_export.session(proto), model, images)


def assert_same(result: deploy.Agreement):
    assert result.images == IMAGES
    assert result.max_diff <= deploy.MAX_DIFF and result.agreement >= deploy.MIN_AGREEMENT and result.passed


@pytest.mark.parametrize("name", list(REFERENCES))
def test_every_reference_network_round_trips(name):
    assert_same(round_trip(REFERENCES[name], seed=3))


def conv(out, **kw):
    return Conv(out=out, **kw)


SMALL = (3, 12, 12)  # colour and small: the per-channel normalisation and odd pooling sizes are exercised
HEAD = (GlobalAvgPool(), Linear(out=5))
# a network for each block kind and each of its variants; together they use every kind in nas.space.blocks.KINDS
BY_KIND = {
    "conv-plain": (conv(8, act="relu"), *HEAD),
    "conv-depthwise": (conv(6, k=3, depthwise=True, bias=False, act="relu"), conv(8, k=1, bn=True), *HEAD),
    "conv-bn-stride-padding": (conv(8, k=3, stride=2, padding=0, bn=True, bias=False), *HEAD),
    "conv-gelu": (conv(8, bn=True, act="gelu"), *HEAD),
    "conv-silu": (conv(8, k=5, act="silu"), *HEAD),
    "conv-none-dropout": (conv(8, act="none", dropout=0.2), *HEAD),
    "conv-relu-then-max-pool": (conv(8, bn=True, act="relu"), Pool(op="max"), *HEAD),  # build reorders these two
    # 5x5 windows on a 12x12 map: ceil keeps a last, partial window (12 -> 3), floor drops the remainder (12 -> 2)
    "pool-max-ceil": (conv(8, act="relu", dropout=0.1), Pool(op="max", k=5, ceil=True), *HEAD),
    "pool-max-floor": (conv(8), Pool(op="max", k=5, ceil=False), *HEAD),
    "pool-avg-ceil": (conv(8), Pool(op="avg", k=5, ceil=True), *HEAD),
    "pool-avg-floor": (conv(8), Pool(op="avg", k=5, ceil=False), *HEAD),
    "pool-avg-even": (conv(8), Pool(op="avg", k=2), *HEAD),
    "residual-identity": (conv(8, act="relu"), Residual(body=(conv(8, bn=True, act="relu"), conv(8, bn=True))), *HEAD),
    "residual-conv-shortcut": (conv(8, act="relu"), Residual(body=(conv(4, k=1, act="relu"), conv(12, stride=2)),
                                                             shortcut=(conv(12, k=1, stride=2, bn=True),)), *HEAD),
    "gap-conv-head": (conv(8, act="relu"), conv(5, k=1), GlobalAvgPool()),
    "flatten-linear": (conv(4, stride=2, act="relu"), Flatten(), Linear(out=5)),
    "flatten-mlp-dropout": (Pool(op="avg", k=3), Flatten(), Linear(out=16, act="relu"), Dropout(p=0.3),
                            Linear(out=5, act="none", bias=False)),
    "linear-activations": (Flatten(), Linear(out=12, act="gelu"), Linear(out=8, act="silu"), Linear(out=5)),
}
HAND_WRITTEN = {name: Candidate(ArchSpec(blocks, SMALL, 5)) for name, blocks in BY_KIND.items()}


def kinds_in(blocks) -> set[str]:
    """The kinds of `blocks` and of the blocks nested in them."""
    kinds = {b.kind for b in blocks}
    for b in blocks:
        if isinstance(b, Residual):
            kinds |= kinds_in(b.body + b.shortcut)
    return kinds


def test_the_hand_written_networks_use_every_block_kind():
    assert set().union(*(kinds_in(c.arch.blocks) for c in HAND_WRITTEN.values())) == set(KINDS)


@pytest.mark.parametrize("name", list(HAND_WRITTEN))
def test_a_network_of_each_block_kind_round_trips(name):
    assert_same(round_trip(HAND_WRITTEN[name], seed=1))


def sampled(n: int = 6) -> list[Candidate]:
    """Candidates drawn at random from every search space, at a small budget (small networks, quick exports)."""
    out = []
    for path in SPACE_FILES:
        space, study = load_space(path), optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=7))
        for _ in range(n // len(SPACE_FILES)):
            trial = study.ask()
            out.append(space.sample(trial, 6_000))
            study.tell(trial, 0.0)
    return out


SAMPLED = sampled()


@pytest.mark.parametrize("i", range(len(SAMPLED)))
def test_sampled_candidates_round_trip(i):
    assert_same(round_trip(SAMPLED[i], seed=i))


def test_a_model_left_without_its_normalisation_fails_the_comparison():
    """The comparison can fail: the bare network, exported, is not the Normalised one."""
    candidate = HAND_WRITTEN["conv-plain"]
    model = trained_looking(candidate.arch, 0)
    bare = export.Normalised(export.Network(*model), DataInfo("x", SMALL, model.info.classes, (0.0,) * 3, (1.0,) * 3))
    proto = onnx_export.model_proto(bare, candidate, model.info)
    images = torch.randint(0, 256, (IMAGES, *SMALL), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    assert not deploy.compare(onnx_export.session(proto), model, images).passed


def test_the_model_takes_any_batch_and_names_its_input_and_output():
    candidate = HAND_WRITTEN["residual-conv-shortcut"]
    model = trained_looking(candidate.arch, 0)
    session = onnx_export.session(onnx_export.model_proto(model, candidate, model.info))
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    for n in (1, 7, 600):  # 600: more than a batch of the runner
        images = torch.randint(0, 256, (n, *SMALL), dtype=torch.uint8)
        assert onnx_export.logits(session, images).shape == (n, 5)


def test_the_file_carries_the_candidate_and_the_data(tmp_path):
    candidate = REFERENCES["R2"]
    model = trained_looking(candidate.arch, 0)
    path = tmp_path / "m.onnx"
    path.write_bytes(onnx_export.model_proto(model, candidate, model.info).SerializeToString())
    proto, read_candidate, read_data = onnx_export.read(path)
    assert read_candidate == candidate and read_data == model.info
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert Candidate.from_json(meta["nas.candidate"]) == candidate
    assert json.loads(meta["nas.data"]) == model.info.to_dict()
    assert not onnx_export.is_int8(proto)


def test_with_metadata_replaces_what_was_there_and_keeps_other_entries():
    candidate = HAND_WRITTEN["conv-plain"]
    model = trained_looking(candidate.arch, 0)
    proto = onnx_export.model_proto(model, candidate, model.info)
    proto.metadata_props.add(key="other", value="kept")
    other = REFERENCES["R1"]
    onnx_export.with_metadata(proto, other, info_for(other.arch))
    meta = [(p.key, p.value) for p in proto.metadata_props]
    assert [k for k, _ in meta] == ["other", "nas.candidate", "nas.data"]
    assert Candidate.from_json(dict(meta)["nas.candidate"]) == other


@pytest.mark.parametrize("content, message", [
    (b"\x08\x07garbage that is no protobuf \xff\xff\xff", "not a readable ONNX model"),
    (b"", "not written by search.py export"),  # an empty protobuf parses as an empty model
    ("foreign", "not written by search.py export"),
    ("bad-metadata", "its metadata is damaged"),
])
def test_read_refuses_anything_but_our_own_files_with_one_line(tmp_path, content, message):
    path = tmp_path / "x.onnx"
    if content == "foreign":
        content = foreign_model().SerializeToString()
    elif content == "bad-metadata":
        proto = foreign_model()
        proto.metadata_props.add(key="nas.candidate", value="{not json")
        proto.metadata_props.add(key="nas.data", value="{}")
        content = proto.SerializeToString()
    path.write_bytes(content)
    with pytest.raises(onnx_export.OnnxFileError) as e:
        onnx_export.read(path)
    assert str(e.value).startswith(f"{path}: {message}") and "\n" not in str(e.value)


def test_scaled_never_changes_the_images_it_is_given():
    for images in (torch.rand(2, 1, 4, 4), torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)):
        before = images.clone()
        assert torch.allclose(onnx_export.scaled(images), before.float() / 255)
        assert torch.equal(images, before)
