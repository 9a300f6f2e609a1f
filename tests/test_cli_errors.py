"""Bad input gets one clear line on stderr and exit code 2, never a traceback."""
import json
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import optuna
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from nas import cli
from nas.data import sources
from nas.space.budget import count_params
from nas.space.space_file import DEFAULT_SPACE, SpaceError, parse_space
from tests.conftest import ROOT

REFERENCE = ROOT / "search_spaces" / "reference" / "r1_lightmnist.json"
UNREACHABLE_DB = "postgresql://u:p@127.0.0.1:1/db"


def run_cli(*args, cwd=ROOT, timeout=60):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "search.py", *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def assert_one_line_error(stderr: str, *mentions: str) -> None:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for word in mentions:
        assert word in lines[0], (word, lines[0])


# flags checked before torch is even imported: cheap enough to run each through the real entry point
@pytest.mark.parametrize("args, mention", [
    (["--trials", "abc"], "--trials"),
    (["--trials", "0"], "--trials"),
    (["--trials", "-3"], "--trials"),
    (["--trials", "1.5"], "--trials"),
    (["--max-params", "lots"], "--max-params"),
    (["--max-params", "0"], "--max-params"),
    (["--timeout", "-1"], "--timeout"),
    (["--timeout", "nan"], "--timeout"),
    (["--threads", "0"], "--threads"),
    (["--jobs", "x"], "--jobs"),
    (["--seed", "-1"], "--seed"),
    (["--epochs", "0"], "--epochs"),
    (["evaluate", "--spec", "R1", "--epochs", "x"], "--epochs"),
    (["--train-subset", "0"], "--train-subset"),
    (["--dataset", "cifar"], "--dataset"),
    (["--sampler", "grid"], "--sampler"),
    (["--objective", "fastest"], "--objective"),
    (["--size-metric", "mflops"], "--size-metric"),  # only with --objective pareto
    (["--objective", "pareto", "--size-metric", "kb"], "--size-metric"),
    (["--sizes", "5000"], "--sizes"),  # only with --objective pareto
    (["--objective", "pareto", "--sizes", "5000,lots"], "--sizes"),
    (["--objective", "pareto", "--sizes", "0,5000"], "--sizes"),
    (["--device", "tpu"], "--device"),
    (["--frobnicate"], "--frobnicate"),
    (["export", "--study", "s"], "--out"),
    (["evaluate", "--study", "s", "--spec", "R1"], "--spec"),
    (["evaluate", "--spec", "R1", "--trial", "2"], "--trial"),
    (["evaluate"], "--study"),
    (["describe"], "path"),
])
def test_bad_flags(args, mention):
    result = run_cli(*args)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, mention)


def test_dataset_choices_match_the_data_module():
    from nas.config import DATASETS
    from nas.data.sources import DATASETS as TORCHVISION

    assert DATASETS == (*TORCHVISION, "folder", "npz")


def _space_text(old: str, new: str) -> str:
    text = DEFAULT_SPACE.read_text()
    assert old in text
    return text.replace(old, new)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    spaces = {
        "not_toml": "x = [",
        "unknown_key": _space_text("kernel = 3", "kernal = 3"),
        "wrong_type": _space_text("kernel = 3", 'kernel = "big"'),
        "empty_list": _space_text("kernel = 3", "kernel = []"),
        "inverted": _space_text("width_growth = { low = 1.0, high = 1.5 }",
                                "width_growth = { low = 1.5, high = 1.0 }"),
        "no_fit": _space_text('head = ["gap", "conv1x1_gap"]', 'head = "flatten_linear"')
                  .replace("pools = [2, 3]", "pools = 0").replace("min_width = 4", "min_width = 64"),
    }
    for name, text in spaces.items():
        (d / f"{name}.toml").write_text(text)
    (d / "binary.toml").write_bytes(b"\xff\xfe\x00")
    (d / "bad.json").write_text("{garbage")
    (d / "list.json").write_text("[]")
    spec = json.loads(REFERENCE.read_text())
    (d / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    spec["recipe"]["lr"] = float("nan")
    (d / "nan_lr.json").write_text(json.dumps(spec))
    (d / "weights.pt").write_bytes(pickle.dumps({"weight": [1.0, 2.0]}))
    (d / "trunc.safetensors").write_bytes(b"\x40\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    (d / "a_file").write_text("not a folder")
    return d


# errors found after the heavy imports: run in-process through the same `main`, which is what `search.py` calls
IN_PROCESS = [
    (["--space", "{d}/missing.toml"], ["missing.toml", "not found"]),
    (["--space", "{d}"], ["not found"]),
    (["--space", "{d}/binary.toml"], ["binary.toml"]),
    (["--space", "{d}/not_toml.toml"], ["not_toml.toml", "TOML"]),
    (["--space", "{d}/unknown_key.toml"], ["unknown_key.toml", "kernal"]),
    (["--space", "{d}/wrong_type.toml"], ["wrong_type.toml", "kernel"]),
    (["--space", "{d}/empty_list.toml"], ["empty_list.toml", "kernel", "empty"]),
    (["--space", "{d}/inverted.toml"], ["inverted.toml", "width_growth"]),
    (["--space", "{d}/no_fit.toml", "--results-dir", "{d}/r"], ["--max-params", "no_fit.toml"]),
    (["--max-params", "10", "--results-dir", "{d}/r"], ["--max-params", "smallest"]),
    (["--objective", "pareto", "--sizes", "5000,30000", "--results-dir", "{d}/r"], ["--sizes 30000", "--max-params"]),
    (["--objective", "pareto", "--sizes", "1000,10000", "--results-dir", "{d}/r"], ["--sizes 1000", "3,750"]),
    (["--results-dir", "{d}/a_file/results"], ["--results-dir", "a_file"]),
    (["--artifact-dir", "{d}/a_file/art", "--results-dir", "{d}/r"], ["--artifact-dir"]),
    (["--storage", "nonsense", "--results-dir", "{d}/r"], ["storage", "nonsense"]),
    (["--storage", UNREACHABLE_DB, "--results-dir", "{d}/r"], ["storage", "127.0.0.1", "***"]),
    (["--storage", "sqlite:///{d}/a_file", "--results-dir", "{d}/r"], ["storage", "a_file"]),
    (["--device", "cuda", "--results-dir", "{d}/r"], ["--device cuda"]),
    (["describe", "{d}/bad.json"], ["bad.json", "JSON"]),
    (["describe", "{d}/list.json"], ["list.json"]),
    (["describe", "{d}/deep.json"], ["deep.json"]),
    (["describe", "{d}/weights.pt"], ["weights.pt"]),
    (["describe", "{d}/trunc.safetensors"], ["trunc.safetensors"]),
    (["describe", "{d}/nope.json"], ["nope.json"]),
    (["evaluate", "--spec", "garbage"], ["garbage"]),
    (["evaluate", "--spec", "{d}/nan_lr.json"], ["nan_lr.json", "lr"]),
    (["evaluate", "--spec", "{d}/weights.pt"], ["weights.pt"]),
    (["report", "--study", "nope", "--results-dir", "{d}/empty"], ["no storage"]),
    (["export", "--study", "nope", "--out", "{d}/x.safetensors", "--results-dir", "{d}/empty"], ["no storage"]),
    (["baselines", "--only", "R9"], ["--only", "R9"]),
]


@pytest.mark.parametrize("args, mentions", IN_PROCESS, ids=[" ".join(a)[:60] for a, _ in IN_PROCESS])
def test_bad_files_and_storage(files, capsys, args, mentions):
    rc = cli.main([a.format(d=files) for a in args] + ["--threads", "1"] * (args[0] not in ("describe",)))
    err = capsys.readouterr().err
    assert rc == 2
    assert_one_line_error(err, *(m.format(d=files) for m in mentions))


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """A storage with one study of one failed and one rejected trial: export and evaluate have nothing to use."""
    d = tmp_path_factory.mktemp("study")
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{d}/nas.db")
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
    return d


@pytest.mark.parametrize("args, mentions", [
    (["export", "--study", "s", "--trial", "999", "--out", "{d}/x.safetensors"], ["--trial 999"]),
    (["export", "--study", "s", "--trial", "0", "--out", "{d}/x.safetensors"], ["trial 0", "no stored weights"]),
    (["export", "--study", "s", "--out", "{d}/x.safetensors"], ["no completed trial"]),
    (["export", "--study", "other", "--out", "{d}/x.safetensors"], ["other", "studies here: s"]),
    (["evaluate", "--study", "s", "--trial", "999"], ["--trial 999"]),
    (["report", "--study", "s", "--results-dir", "{d}/nas.db"], ["no storage"]),
])
def test_bad_study_references(tiny_study, capsys, args, mentions):
    args = [a.format(d=tiny_study) for a in args]
    if "--results-dir" not in args:
        args += ["--results-dir", str(tiny_study)]
    rc = cli.main(args)
    assert rc == 2
    assert_one_line_error(capsys.readouterr().err, *mentions)


def test_a_study_reused_with_another_budget_is_refused(tmp_path, capsys):
    from nas.config import SearchConfig
    from nas.run import open_study
    from nas.space.space_file import load_space

    space = load_space()
    open_study(SearchConfig(results_dir=str(tmp_path), study="s", max_params=25_000), space)
    rc = cli.main(["--study", "s", "--max-params", "9000", "--results-dir", str(tmp_path), "--threads", "1"])
    assert rc == 2
    assert_one_line_error(capsys.readouterr().err, "'s'", "max_params=25000", "--study")


def test_real_entry_point_on_bad_files(files):
    """The same errors through `python search.py`, after torch and Optuna are loaded: still one line, exit 2."""
    result = run_cli("--space", files / "not_toml.toml", "--storage", UNREACHABLE_DB, timeout=120)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "not_toml.toml")
    result = run_cli("--storage", UNREACHABLE_DB, "--results-dir", files / "r", "--threads", "1", timeout=120)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "cannot open storage")


# -- property-based: random malformed space files and random argument lists ---------------------------
_GOOD = __import__("tomllib").loads(DEFAULT_SPACE.read_text())
_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=8), st.lists(st.integers(-5, 200), max_size=4),
                    st.fixed_dictionaries({"low": st.integers(-5, 50), "high": st.integers(-5, 50)}),
                    st.dictionaries(st.sampled_from(["low", "high", "log", "step"]),
                                    st.one_of(st.floats(-1, 10), st.booleans(), st.text(max_size=3)), max_size=4))


@st.composite
def malformed_spaces(draw):
    raw = {"name": _GOOD["name"], "arch": dict(_GOOD["arch"]), "recipe": dict(_GOOD["recipe"])}
    for _ in range(draw(st.integers(1, 4))):
        section = draw(st.sampled_from(["arch", "recipe", "top"]))
        table = raw if section == "top" or not isinstance(raw.get(section), dict) else raw[section]
        action = draw(st.sampled_from(["set", "delete", "add"]))
        if action == "delete" and table:
            table.pop(draw(st.sampled_from(sorted(table))))
        elif action == "add":
            table[draw(st.text(min_size=1, max_size=6))] = draw(_VALUES)
        elif table:
            table[draw(st.sampled_from(sorted(table)))] = draw(_VALUES)
    return raw


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(malformed_spaces())
def test_random_space_files_give_a_clean_error_or_a_valid_space(raw):
    try:
        space = parse_space(raw, Path("random.toml"))
    except SpaceError as e:
        assert str(e).startswith("random.toml") and "\n" not in str(e)
        return
    smallest = space.smallest(count_params)  # a valid space can be sized, and sampled
    assert smallest > 0
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    space.sample(study.ask(), 25_000)


_WORK = Path(tempfile.mkdtemp(prefix="nas-fuzz-"))
_TOKENS = ["search", "report", "export", "evaluate", "baselines", "describe", "--trials", "--max-params", "--space",
           "--study", "--storage", "--seed", "--jobs", "--timeout", "--device", "--threads", "--dataset", "--sampler",
           "--epochs", "--train-subset", "--results-dir", "--out", "--trial", "--spec", "--seeds", "--only", "--quiet",
           "--warm-start", "0", "1", "-1", "2.5", "nan", "inf", "1e9", "abc", "", "R1", "R9", "cpu", "cuda", "mps",
           "tpe", "random", "mnist", "fashion-mnist", str(_WORK / "nowhere.toml"), str(_WORK / "out.safetensors"),
           str(DEFAULT_SPACE), str(REFERENCE), "sqlite:///" + str(_WORK / "x" / "y" / "z.db"), "--", "-h"]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.sampled_from(_TOKENS), st.text(max_size=6)), max_size=7))
def test_random_argument_lists_give_a_clean_error_or_a_valid_run(argv):
    from nas import api, commands

    started = []
    stub = lambda *args, **kwargs: started.append(args) or 0  # noqa: E731 - a valid run, without the training
    saved = {(module, name): getattr(module, name) for module, name in (
        (api, "search"), (commands, "cmd_evaluate"), (commands, "cmd_baselines"))}
    cwd = os.getcwd()
    import contextlib
    import io

    err = io.StringIO()
    try:
        os.chdir(_WORK)  # the default ./results lands in a scratch folder
        for module, name in saved:
            setattr(module, name, stub)
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                rc = cli.main(argv)
            except SystemExit as e:  # argparse's --help and its one-line errors
                rc = e.code
    finally:
        os.chdir(cwd)
        for (module, name), fn in saved.items():
            setattr(module, name, fn)
    assert rc in (0, 2), (argv, rc, err.getvalue())
    if rc == 2:
        assert_one_line_error(err.getvalue())


def test_parallel_workers_with_missing_data_fail_cleanly(tmp_path):
    """--jobs N checks the data once, before any worker starts: one error line and exit 2, not a silent 0."""
    proc = subprocess.run([sys.executable, str(ROOT / "search.py"), "--trials", "1", "--jobs", "2",
                           "--results-dir", str(tmp_path / "r"), "--data-dir", str(tmp_path / "nodata")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2
    assert_one_line_error(proc.stderr, "nodata")


def test_a_search_resumed_on_changed_data_is_refused_in_one_line_before_any_worker(tmp_path):
    """Images added to an npz file since its study was made would redraw the hold-out; --jobs 2 checks once."""
    arrays, rng = tmp_path / "parts.npz", np.random.default_rng(0)

    def write(n_train: int) -> None:
        np.savez(arrays, x_train=rng.integers(0, 255, (n_train, 8, 8), dtype=np.uint8),
                 y_train=np.arange(n_train) % 2, x_test=rng.integers(0, 255, (12, 8, 8), dtype=np.uint8),
                 y_test=np.arange(12) % 2)

    search = ["--dataset", "npz", "--data-dir", arrays, "--max-params", 3000, "--results-dir", tmp_path / "r",
              "--jobs", 2, "--quiet"]
    write(60)
    assert run_cli(*search, "--trials", 1, timeout=120).returncode == 0
    write(66)
    result = run_cli(*search, "--trials", 2, timeout=120)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "was made from other data", "parts.npz")


@pytest.mark.parametrize("bench, args, mention", [
    ("throughput.py", ["--only", "epoch", "--runs", "1", "--data-dir", "{d}"], "train-images-idx3-ubyte"),
    ("recheck.py", ["--study", "nothing-here", "--results-dir", "{d}/results", "--data-dir", "{d}"], "no storage"),
])
def test_a_benchmark_given_bad_input_prints_one_line(tmp_path, bench, args, mention):
    """Benchmarks that read data or studies in-process fail as search.py does: one line and exit 2."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in sources.FILES.values():
        (raw / name).write_bytes(b"not an IDX file")
    (tmp_path / "results").mkdir()
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / bench), *(a.format(d=tmp_path) for a in args)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert_one_line_error(proc.stderr, mention)
