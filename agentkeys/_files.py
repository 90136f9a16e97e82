"""The one way agentkeys writes a private file: 0600, in a 0700 directory, atomically.

Used for session tokens, operator state, chain settings, the daemon's environment
file, the dev stack's state, PKI keys and certificates, the signer's sealed key store,
the development mail sink and the files ``agentkeys sidecar setup`` writes for a daemon
user. A file that already exists with a wider mode ends 0600 (it is replaced, not
rewritten in place), and its directory is re-restricted to 0700 even when it already
existed. ``exclusive=True`` never replaces an existing file (keys, sealed secrets, a pid
file): the new file appears whole or not at all.

Two variations, both explicit at the call site:

* ``owner=(uid, gid)``: root writing a file for another user (the sidecar's daemon user):
  the file and its directory end owned by that user, set on the descriptor before the
  file appears under its name.
* ``group=gid``: a file one group may read (the sidecar's env file, for the agent user):
  0640 in a 0710 directory, both of that group.

:func:`write_public` writes a non-secret file (a systemd unit) into a directory whose
mode it leaves alone.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from agentkeys.config import InsecureFileError

__all__ = ["write_private", "write_public"]

_FILE_MODE = 0o600
_DIR_MODE = 0o700
_GROUP_FILE_MODE = 0o640
_GROUP_DIR_MODE = 0o710


def _private_dir(directory: Path, *, uid: int, gid: int, mode: int) -> None:
    directory.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    st = directory.stat()
    if not stat.S_ISDIR(st.st_mode):
        raise InsecureFileError(f"{directory} is not a directory")
    if st.st_uid not in (os.geteuid(), uid):
        raise InsecureFileError(f"{directory} is owned by uid {st.st_uid}, not by this user")
    if st.st_uid != uid or gid not in (-1, st.st_gid):
        os.chown(directory, uid, gid)
    if stat.S_IMODE(st.st_mode) != mode:
        os.chmod(directory, mode)


def write_private(
    path: Path,
    data: bytes | str,
    *,
    exclusive: bool = False,
    owner: tuple[int, int] | None = None,
    group: int | None = None,
) -> None:
    """Write ``data`` to ``path``: mode 0600 in a 0700 directory, atomically and durably.

    The bytes go to a new temporary file in the same directory (``O_EXCL |
    O_NOFOLLOW``, ``fchmod`` 0600 so the umask cannot widen it, ``fsync``) that is
    then renamed over ``path`` (or, with ``exclusive``, hard-linked to ``path``, which
    fails if it exists), and the directory is fsynced: a reader sees the old file or the
    new one, and an existing file's wider mode does not survive. The directory is
    created 0700 or, if it exists, set back to 0700. ``str`` data is written as UTF-8.

    Args:
        owner: (uid, gid) the file and its directory end owned by (root writing for a
            service user); default this process's euid and egid.
        group: a group that may read the file: 0640 in a 0710 directory, both of
            this group (the process must be root or a member of it).

    Raises:
        FileExistsError: ``exclusive`` and ``path`` exists (nothing is written).
        InsecureFileError: ``path`` is a symbolic link or not a regular file, or the
            directory is not a directory of this user (or of ``owner``).
        OSError: the directory or file cannot be written.
    """
    uid, gid = owner if owner is not None else (os.geteuid(), -1)
    if group is not None:
        gid = group
    dir_mode, file_mode = (
        (_DIR_MODE, _FILE_MODE) if group is None else (_GROUP_DIR_MODE, _GROUP_FILE_MODE)
    )
    _private_dir(path.parent, uid=uid, gid=gid, mode=dir_mode)
    _write(path, data, mode=file_mode, uid=uid, gid=gid, exclusive=exclusive)


def write_public(path: Path, data: bytes | str, *, mode: int = 0o644) -> None:
    """Write a non-secret file (e.g. a systemd unit) atomically into an existing directory
    owned by this user or root, whose mode is left as it is.

    Raises:
        InsecureFileError: ``path`` is a symbolic link or not a regular file, or the
            directory is writable by others.
        OSError: the directory does not exist or cannot be written.
    """
    st = path.parent.stat()
    if st.st_uid not in (os.geteuid(), 0) or stat.S_IMODE(st.st_mode) & 0o022:
        raise InsecureFileError(f"{path.parent} is writable by others; refusing to write there")
    _write(path, data, mode=mode, uid=os.geteuid(), gid=-1, exclusive=False)


def _write(
    path: Path, data: bytes | str, *, mode: int, uid: int, gid: int, exclusive: bool
) -> None:
    directory = path.parent
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
            if uid != os.geteuid() or gid != -1:
                os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
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
