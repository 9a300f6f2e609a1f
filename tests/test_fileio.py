"""Result files: a crash mid-write leaves the old file and no temporary; a bad folder fails before the search."""
from pathlib import Path

import pytest

from nas import fileio
from nas.errors import SearchError


def test_a_crash_mid_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "trials.csv"
    target.write_text("old,complete\n")

    def half_then_crash(self, text, *a, **k):
        Path.write_bytes(self, text[: len(text) // 2].encode())
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", half_then_crash)
    with pytest.raises(OSError):
        fileio.write_text(target, "new,half,written,file\n" * 100)
    monkeypatch.undo()
    assert target.read_text() == "old,complete\n"
    assert [p.name for p in tmp_path.iterdir()] == ["trials.csv"]


def test_a_write_replaces_the_file_whole(tmp_path):
    target = tmp_path / "deep" / "frontier.csv"
    fileio.write_text(target, "a,b\n")
    fileio.write_text(target, "c,d\n")
    assert target.read_text() == "c,d\n" and [p.name for p in target.parent.iterdir()] == ["frontier.csv"]


def test_a_folder_that_cannot_be_written_fails_now_naming_the_flag(tmp_path):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(SearchError, match="--results-dir .*a_file is a file, not a folder"):
        fileio.writable_dir(tmp_path / "a_file" / "results", "--results-dir")
    made = fileio.writable_dir(tmp_path / "new" / "results", "--results-dir")
    assert made.is_dir() and not list(made.iterdir())
