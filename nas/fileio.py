"""Result files: atomic writes (a crash mid-write never leaves a half-written file) and writable-folder checks."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from nas.errors import SearchError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yields a temporary path beside `path`; on success it replaces `path` in one rename, with the mode a new file
    gets under the umask. A write that fails (a full disk) leaves `path` as it was and raises an OSError naming it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes files 0600, unreadable to a group or a web server
        os.replace(tmp, path)
    except OSError as e:
        if e.errno is None or e.filename is not None and os.fspath(e.filename) != tmp:
            raise  # not a write error, or one about another file (an input): its message already says which
        raise OSError(e.errno, e.strerror, str(path)) from None  # named by the result file, not the temporary one
    finally:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it; put it straight back
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def writable_dir(path: str | os.PathLike, flag: str) -> Path:
    """Creates `path` and proves a file can be written there, so a bad folder fails now, not after the search."""
    path = Path(path)
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise SearchError(f"{flag} {path}: cannot write there ({blocker} is a file, not a folder)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        raise SearchError(f"{flag} {path}: cannot write there ({e.strerror or type(e).__name__})") from None
    return path
