"""Result files: a crash mid-write leaves the old file and no temporary; a bad folder fails before the search."""
import errno
import os
import stat
from pathlib import Path

import pytest

from nas import fileio
from nas.errors import SearchError


def test_a_crash_mid_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "trials.csv"
    target.write_text("old,complete\n")

    def half_then_crash(self, text, *a, **k):
        Path.write_bytes(self, text[: len(text) // 2].encode())
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", half_then_crash)
    with pytest.raises(OSError) as e:
        fileio.write_text(target, "new,half,written,file\n" * 100)
    monkeypatch.undo()
    assert (e.value.errno, e.value.filename) == (errno.ENOSPC, str(target))  # the file, not the temporary
    assert target.read_text() == "old,complete\n"
    assert [p.name for p in tmp_path.iterdir()] == ["trials.csv"]


def test_a_write_replaces_the_file_whole(tmp_path):
    target = tmp_path / "deep" / "frontier.csv"
    fileio.write_text(target, "a,b\n")
    fileio.write_text(target, "c,d\n")
    assert target.read_text() == "c,d\n" and [p.name for p in target.parent.iterdir()] == ["frontier.csv"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_a_written_file_has_the_mode_the_umask_gives_a_new_file(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        fileio.write_text(tmp_path / "trials.csv", "a,b\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "trials.csv").st_mode) == mode


def test_an_error_about_another_file_keeps_its_name(tmp_path):
    """Say, the artifact an export copies from cannot be read: the message names it, not the file being written."""
    with pytest.raises(PermissionError) as e, fileio.atomic_path(tmp_path / "out.safetensors"):
        raise PermissionError(errno.EACCES, "Permission denied", "/artifacts/abc")
    assert e.value.filename == "/artifacts/abc" and not list(tmp_path.iterdir())


def test_a_folder_that_cannot_be_written_fails_now_naming_the_flag(tmp_path):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(SearchError, match="--results-dir .*a_file is a file, not a folder"):
        fileio.writable_dir(tmp_path / "a_file" / "results", "--results-dir")
    made = fileio.writable_dir(tmp_path / "new" / "results", "--results-dir")
    assert made.is_dir() and not list(made.iterdir())
