"""The local files imgcache writes: private to their user unless the operator says otherwise.

Prompts, parameters and images are other people's data: every file is created with
``file_mode`` (default ``0o600``) and every directory with the matching :func:`dir_mode`
(``0o700``), set exactly (the umask neither loosens nor tightens what the operator chose).
The same helpers keep a hostile or damaged directory from hurting a reader: a file is never
opened through a symlink, a FIFO or a device never blocks it, and anything but a regular
file at a file's path is refused with :class:`NotAFile`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

from .errors import ConfigError

log = logging.getLogger("imgcache")

DEFAULT_FILE_MODE = 0o600
_WRITING = os.O_WRONLY | os.O_RDWR


class NotAFile(OSError):
    """Something other than a regular file (a directory, a FIFO, a device) at a file's path."""


def check_file_mode(mode: int) -> int:
    """A permission mode for the cache's files: its owner must be able to read and write them."""
    if type(mode) is not int or not 0 <= mode <= 0o777 or mode & 0o600 != 0o600:
        raise ConfigError(f"file_mode must be permission bits including 0o600 (0o600, 0o640, ...),"
                          f" not {mode!r}")
    return mode


def parse_file_mode(text: str, name: str) -> int:
    """An octal mode from the environment: ``640``, ``0640`` or ``0o640``."""
    try:
        mode = int(text.strip().lower().removeprefix("0o"), 8)
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not an octal mode like 600 or 0o640") from None
    return check_file_mode(mode)


def dir_mode(file_mode: int) -> int:
    """The directory mode matching a file mode: search (x) wherever read or write is allowed
    (0o600 -> 0o700, 0o640 -> 0o750)."""
    mode = file_mode
    for shift in (6, 3, 0):
        if file_mode >> shift & 0o6:
            mode |= 1 << shift
    return mode


def make_dirs(path: Path, mode: int) -> None:
    """``mkdir -p`` that gives every directory it creates ``mode`` (Path.mkdir gives the
    parents it creates the default mode). FileExistsError if a non-directory is in the way."""
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        if not path.is_dir():
            raise
        return
    except FileNotFoundError:
        make_dirs(path.parent, mode)
        try:
            os.mkdir(path, mode)
        except FileExistsError:  # made by another process meanwhile
            if not path.is_dir():
                raise
            return
    os.chmod(path, mode)


def open_file(path: str | os.PathLike[str], flags: int, mode: int = DEFAULT_FILE_MODE, *,
              follow_symlinks: bool = False) -> int:
    """``os.open`` for the cache's own files: never through a symlink at ``path`` (ELOOP;
    unless ``follow_symlinks``: a caller's own image file), never blocking on a FIFO, NotAFile
    for anything but a regular file. A file opened for writing that this user owns is given
    ``mode``."""
    nofollow = 0 if follow_symlinks else os.O_NOFOLLOW
    fd = os.open(path, flags | nofollow | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, mode)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotAFile(0, "not a regular file", os.fspath(path))
        if flags & _WRITING and stat.S_IMODE(info.st_mode) != mode and info.st_uid == os.geteuid():
            os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_file(path: Path, offset: int = 0) -> bytes | None:
    """The bytes of ``path`` from ``offset``; None if there is no such file."""
    try:
        fd = open_file(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    with open(fd, "rb") as file:
        if offset:
            file.seek(offset)
        return file.read()


def write_file(path: Path, data: bytes, mode: int = DEFAULT_FILE_MODE, *, exclusive: bool = False) -> None:
    """Replace ``path`` with ``data`` atomically (a temporary file in the same directory,
    renamed into place: a reader sees the old bytes, the new bytes or no file, never a torn
    write), creating its directory. Temporaries are named ``.<name>.<12 hex>.tmp``. With
    ``exclusive``, only if ``path`` is absent (linked into place): FileExistsError otherwise."""
    make_dirs(path.parent, dir_mode(mode))
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = open_file(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with open(fd, "wb") as file:
            file.write(data)
        (os.link if exclusive else os.replace)(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if exclusive:
        tmp.unlink()  # the file is linked into place: its temporary name goes


def append_file(path: Path, data: bytes, mode: int = DEFAULT_FILE_MODE) -> int:
    """Append ``data`` to ``path`` (created if absent, with its directory); its new size."""
    make_dirs(path.parent, dir_mode(mode))
    fd = open_file(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, mode)
    with open(fd, "ab") as file:
        file.write(data)
        return file.tell()


@contextlib.contextmanager
def flocked(lock_path: Path, mode: int = DEFAULT_FILE_MODE) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (created if absent) for the block."""
    make_dirs(lock_path.parent, dir_mode(mode))
    fd = open_file(lock_path, os.O_RDWR | os.O_CREAT, mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when the file is closed
        yield
    finally:
        os.close(fd)


def tighten(directory: Path, mode: int) -> None:
    """Take from a directory this user owns the permissions beyond ``mode`` that an older
    version gave it (0o755 -> 0o700), so that what it holds is private from now on; logged."""
    try:
        info = os.stat(directory)
        current = stat.S_IMODE(info.st_mode)
        wanted = current & (mode | ~0o777)  # keeps setgid and sticky bits
        if info.st_uid != os.geteuid() or not stat.S_ISDIR(info.st_mode) or wanted == current:
            return
        os.chmod(directory, wanted)
    except OSError as exc:
        log.debug("imgcache: cannot tighten %s: %r", directory, exc)
        return
    log.warning("imgcache: %s was readable by other users (mode %04o); now %04o",
                directory, current, wanted)
