"""nas.cli: the default command, flag checks, one-line messages and exit codes. Bad inputs end to end are in
test_cli_errors.py; these call the functions in-process, with the commands stubbed."""
import argparse
import signal
import subprocess
import sys

import pytest

from nas import cli, commands
from nas.config import config_from
from nas.data import DataError
from nas.errors import CliError, SearchError, SearchFailed, StorageError, UserError
from nas.deploy.export import WeightsError
from nas.engine.interrupts import Interrupted
from nas.space.space_file import SpaceError
from nas.space.spec import SpecError
from tests.conftest import ROOT


@pytest.mark.parametrize("argv, command", [
    ([], "search"),
    (["--trials", "3"], "search"),
    (["search", "--trials", "3"], "search"),
    (["report", "--study", "s"], "report"),
    (["describe", "x.json"], "describe"),
])
def test_parse_runs_search_unless_a_command_is_named(argv, command):
    assert cli.parse(argv).command == command


def test_parse_fills_in_the_search_defaults():
    args = cli.parse(["--trials", "3"])
    assert (args.trials, args.max_params, args.sampler, args.epochs, args.seed) == (3, 25_000, "tpe", 1, 0)


@pytest.mark.parametrize("argv", [[], ["evaluate", "--spec", "R1"], ["baselines"]])
def test_settings_not_given_take_their_defaults(argv):
    config = config_from(vars(cli.parse(argv)))
    assert (config.dataset, config.epochs, config.train_subset) == ("mnist", 1, None)


@pytest.mark.parametrize("argv", [["report", "--study", "s"], ["export", "--study", "s", "--out", "m.safetensors"],
                                  ["evaluate", "--study", "s"]])
def test_study_commands_tell_a_setting_left_out_from_one_given(argv):
    """None: take the study's. A default here would contradict a study made with other settings."""
    args = cli.parse(argv)
    assert (args.dataset, getattr(args, "epochs", None), args.train_subset) == (None, None, None)
    given = cli.parse([*argv, "--dataset", "fashion-mnist", "--train-subset", "9"] + ["--epochs", "2"] * (
        argv[0] == "evaluate"))
    assert (given.dataset, given.train_subset) == ("fashion-mnist", 9)
    assert getattr(given, "epochs", 2) == 2


def test_every_subcommand_is_known_to_the_default_command_rule():
    """A command missing from COMMANDS would be read as a flag of `search` and refused."""
    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(cli.COMMANDS)


def test_help_alone_is_the_top_level_help(capsys):
    with pytest.raises(SystemExit) as e:
        cli.parse(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    assert "{" + ",".join(cli.COMMANDS) + "}" in out and "--trials" not in out


@pytest.mark.parametrize("minimum, text, value", [(1, "1", 1), (1, "25000", 25_000), (0, "0", 0)])
def test_positive_int_accepts_whole_numbers_from_its_minimum(minimum, text, value):
    assert cli._positive_int("--x", minimum)(text) == value


@pytest.mark.parametrize("minimum, text, message", [
    (1, "0", "--x must be at least 1, got 0"),
    (0, "-1", "--x must be at least 0, got -1"),
    (1, "2.0", "--x takes a whole number, got '2.0'"),
    (1, "", "--x takes a whole number, got ''"),
])
def test_positive_int_refuses_with_the_flag_and_the_value(minimum, text, message):
    with pytest.raises(argparse.ArgumentTypeError) as e:
        cli._positive_int("--x", minimum)(text)
    assert str(e.value) == message


@pytest.mark.parametrize("text, value", [("90", 90.0), ("0.5", 0.5), ("1e-9", 1e-9)])
def test_positive_float_accepts_positive_finite_numbers(text, value):
    assert cli._positive_float("--x")(text) == value


@pytest.mark.parametrize("text, message", [
    ("0", "--x must be a positive number, got 0"),
    ("-0.0", "--x must be a positive number, got -0.0"),
    ("inf", "--x must be a positive number, got inf"),
    ("-inf", "--x must be a positive number, got -inf"),
    ("NaN", "--x must be a positive number, got NaN"),
    ("soon", "--x takes a number, got 'soon'"),
])
def test_positive_float_refuses_zero_infinite_nan_and_words(text, message):
    with pytest.raises(argparse.ArgumentTypeError) as e:
        cli._positive_float("--x")(text)
    assert str(e.value) == message


def test_a_bad_flag_exits_2_with_one_line_naming_it(capsys):
    with pytest.raises(SystemExit) as e:
        cli.parse(["--trial-time-limit", "0"])
    assert e.value.code == 2
    assert capsys.readouterr().err == ("error: argument --trial-time-limit: --trial-time-limit must be a positive "
                                       "number, got 0 (see --help)\n")


def test_a_line_break_in_a_bad_argument_stays_on_the_error_line(capsys):
    with pytest.raises(SystemExit) as e:
        cli.parse(["--frob\nnicate"])
    assert e.value.code == 2
    assert capsys.readouterr().err == "error: unrecognized arguments: --frob\\nnicate (see --help)\n"


@pytest.mark.parametrize("text, expected", [
    ("plain", "plain"),
    ("a\nb\r\nc", "a\\nb\\r\\nc"),
    ("x\x0by\x0cz\x85w\u2028v\u2029", "x\\x0by\\x0cz\\x85w\\u2028v\\u2029"),
    ("tab\tand é stay", "tab\tand é stay"),
    (KeyError("k"), "'k'"),
])
def test_one_line_escapes_only_line_breaks(text, expected):
    assert cli.one_line(text) == expected


@pytest.mark.parametrize("error", [
    UserError("u"), CliError("c"), SearchError("s"), StorageError("t"), DataError("d"), SpecError("p"),
    SpaceError("q"), WeightsError("w"),
])
def test_user_errors_are_reported_by_their_message(error):
    assert cli._user_message(error) == str(error)


@pytest.mark.parametrize("error, message", [
    (FileNotFoundError(2, "No such file or directory", "/x/y.toml"), "/x/y.toml: No such file or directory"),
    (PermissionError(13, "Permission denied"), "Permission denied"),
    (OSError("disk gone"), "disk gone"),
])
def test_os_errors_are_reported_by_file_and_reason(error, message):
    assert cli._user_message(error) == message


@pytest.mark.parametrize("error", [ValueError("v"), RuntimeError("r"), KeyError("k"), AssertionError()])
def test_other_errors_are_bugs_and_get_no_message(error):
    assert cli._user_message(error) is None


def _command_raises(monkeypatch, error):
    def fail(config, args):
        raise error

    monkeypatch.setattr(commands, "cmd_report", fail)
    return cli.main(["report", "--study", "s"])


def test_main_prints_a_user_error_as_one_line_and_returns_2(monkeypatch, capsys):
    assert _command_raises(monkeypatch, StorageError("no study 's'\nhere")) == 2
    captured = capsys.readouterr()
    assert captured.err == "error: no study 's'\\nhere\n" and captured.out == ""


@pytest.mark.parametrize("error, code", [(KeyboardInterrupt(), 130), (Interrupted(signal.SIGINT), 130),
                                         (Interrupted(signal.SIGTERM), 143)], ids=["ctrl-c", "sigint", "sigterm"])
def test_main_returns_128_plus_the_signal_on_an_interrupt(monkeypatch, capsys, error, code):
    assert _command_raises(monkeypatch, error) == code
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == ["interrupted"] and captured.out == ""


def test_main_finds_a_storage_outage_behind_optunas_cleanup_error(monkeypatch, capsys):
    from nas.engine.retry import StorageUnreachable

    bug = UnboundLocalError("cannot access local variable 'frozen_trial'")
    bug.__context__ = StorageUnreachable("storage postgresql://u:***@db/nas unreachable for 90 s, giving up: refused")
    assert _command_raises(monkeypatch, bug) == 2
    assert capsys.readouterr().err == "error: storage postgresql://u:***@db/nas unreachable for 90 s, giving up: refused\n"


def test_main_returns_3_when_the_search_ran_but_failed(monkeypatch, capsys):
    assert _command_raises(monkeypatch, SearchFailed("no trial completed in study 's'")) == 3
    assert capsys.readouterr().err == "error: no trial completed in study 's'\n"


def test_main_lets_a_bug_keep_its_traceback(monkeypatch, capsys):
    with pytest.raises(ZeroDivisionError):
        _command_raises(monkeypatch, ZeroDivisionError("a bug"))
    assert capsys.readouterr().err == ""


def test_main_runs_the_command_from_sys_argv_and_returns_its_code(monkeypatch):
    seen = []
    monkeypatch.setattr(commands, "cmd_report", lambda config, args: seen.append((args.study, config.seed)) or 5)
    monkeypatch.setattr(sys, "argv", ["search.py", "report", "--study", "mine", "--seed", "4"])
    assert cli.main() == 5
    assert seen == [("mine", 4)]


def test_bad_flags_fail_before_torch_is_imported():
    code = ("import sys\nfrom nas import cli\ntry:\n    cli.main(['--trials', 'x'])\n"
            "except SystemExit as e:\n    print(e.code, 'torch' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.stdout.split() == ["2", "False"], proc.stderr


@pytest.mark.parametrize("argv, message", [
    (["--image-size", "7"], "argument --image-size: --image-size must be at least 8, got 7"),
    (["--dataset", "imagenet"], "argument --dataset: invalid choice: 'imagenet' (choose from 'mnist', 'fashion-mnist', "
                                "'kmnist', 'emnist-letters', 'emnist-balanced', 'cifar10', 'cifar100', 'svhn', 'folder', "
                                "'npz')"),
])
def test_bad_data_flags_fail_before_torch_is_imported_listing_what_is_known(argv, message):
    code = ("import sys\nfrom nas import cli\ntry:\n    cli.main(sys.argv[1:])\n"
            "except SystemExit as e:\n    print(e.code, 'torch' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.stdout.split() == ["2", "False"] and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


def test_every_source_and_an_image_size_parse_into_the_settings():
    from nas.config import config_from

    for dataset in cli.DATASETS:
        args = cli.parse(["--dataset", dataset, "--data-dir", "d", "--image-size", "32"])
        config = config_from(vars(args))
        assert (config.dataset, config.data_dir, config.image_size) == (dataset, "d", 32)
    assert config_from(vars(cli.parse([]))).image_size is None
