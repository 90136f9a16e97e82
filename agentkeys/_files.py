"""The one way agentkeys writes a private file: 0600, in a 0700 directory, atomically.

Used for session tokens, operator state, chain settings, the daemon's environment
file, the dev stack's state, PKI keys and certificates, the signer's sealed key store and
the development mail sink. A file that already exists with a wider mode ends 0600 (it is
replaced, not rewritten in place), and its directory is re-restricted to 0700 even when
it already existed. ``exclusive=True`` never replaces an existing file (keys, sealed
secrets, a pid file): the new file appears whole or not at all.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from agentkeys.config import InsecureFileError

__all__ = ["write_private"]

_FILE_MODE = 0o600
_DIR_MODE = 0o700


def _private_dir(directory: Path) -> None:
    directory.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    st = directory.stat()
    if not stat.S_ISDIR(st.st_mode):
        raise InsecureFileError(f"{directory} is not a directory")
    if st.st_uid != os.geteuid():
        raise InsecureFileError(f"{directory} is owned by uid {st.st_uid}, not by this user")
    if stat.S_IMODE(st.st_mode) != _DIR_MODE:
        os.chmod(directory, _DIR_MODE)


def write_private(path: Path, data: bytes | str, *, exclusive: bool = False) -> None:
    """Write ``data`` to ``path``: mode 0600 in a 0700 directory, atomically and durably.

    The bytes go to a new temporary file in the same directory (``O_EXCL |
    O_NOFOLLOW``, ``fchmod`` 0600 so the umask cannot widen it, ``fsync``) that is
    then renamed over ``path`` (or, with ``exclusive``, hard-linked to ``path``, which
    fails if it exists), and the directory is fsynced: a reader sees the old file or the
    new one, and an existing file's wider mode does not survive. The directory is
    created 0700 or, if it exists, set back to 0700. ``str`` data is written as UTF-8.

    Raises:
        FileExistsError: ``exclusive`` and ``path`` exists (nothing is written).
        InsecureFileError: ``path`` is a symbolic link or not a regular file, or the
            directory is not a directory of this user.
        OSError: the directory or file cannot be written.
    """
    directory = path.parent
    _private_dir(directory)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISREG(st.st_mode):
            raise InsecureFileError(f"{path} is a symbolic link or not a regular file; refusing")
    raw = data.encode("utf-8") if isinstance(data, str) else data
    tmp = directory / f".{path.name}.{secrets.token_hex(8)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, _FILE_MODE)
    try:
        try:
            os.fchmod(fd, _FILE_MODE)
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if exclusive:
            os.link(tmp, path)
            tmp.unlink()
        else:
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
