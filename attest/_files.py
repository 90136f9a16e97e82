"""Private files and directories: 0600 files in 0700 directories, no symlinks.

Used for the software K10 key file, the software sealing key and sealed blobs.
Every check works on the opened descriptor (``fstat``), so a path swapped after
the check cannot slip through.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from attest.errors import InsecurePath

_FILE_MODE = 0o600
_DIR_MODE = 0o700
_GROUP_DIR_MODE = 0o710


def ensure_private_dir(path: Path, *, group: int | None = None) -> None:
    """Create ``path`` as a 0700 directory owned by us, or check an existing one.

    With ``group`` the directory is 0710 of that group instead: its members may reach a
    file inside by name (the sidecar's socket), not list it. The group is set before the
    mode widens.

    Raises:
        InsecurePath: the path is a symlink, not a directory, owned by another
            user, or group/other can access it (beyond ``group``'s search bit).
    """
    try:
        path.parent.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        os.mkdir(path, _DIR_MODE)
        os.chmod(path, _DIR_MODE)  # mkdir's mode is narrowed by umask only; set it exactly
    except FileExistsError:
        pass
    except OSError as exc:
        raise InsecurePath(f"cannot create directory {path}: {exc.strerror}") from exc
    if group is not None:
        check_private_dir(path, group=os.lstat(path).st_gid)  # ours, 0700 or 0710
        try:
            os.chown(path, -1, group)
            os.chmod(path, _GROUP_DIR_MODE)
        except OSError as exc:
            raise InsecurePath(f"cannot give {path} to group {group}: {exc.strerror}") from exc
    check_private_dir(path, group=group)


def check_private_dir(path: Path, *, group: int | None = None) -> None:
    """Refuse ``path`` unless it is a real 0700 directory owned by the effective uid
    (or, with ``group``, 0710 or 0700 and of that group)."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise InsecurePath(f"cannot inspect directory {path}: {exc.strerror}") from exc
    if stat.S_ISLNK(st.st_mode):
        raise InsecurePath(f"{path} is a symlink; refusing it")
    if not stat.S_ISDIR(st.st_mode):
        raise InsecurePath(f"{path} is not a directory")
    if st.st_uid != os.geteuid():
        raise InsecurePath(f"{path} is owned by uid {st.st_uid}, not by us")
    mode = stat.S_IMODE(st.st_mode)
    if group is not None and st.st_gid == group and mode in (_DIR_MODE, _GROUP_DIR_MODE):
        return
    if mode & 0o077:
        wanted = "0700" if group is None else f"0710 of group {group}"
        raise InsecurePath(f"{path} has mode {mode:04o}; it must be {wanted}")


def _check_private_fd(fd: int, path: Path) -> None:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise InsecurePath(f"{path} is not a regular file")
    if st.st_uid != os.geteuid():
        raise InsecurePath(f"{path} is owned by uid {st.st_uid}, not by us")
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise InsecurePath(f"{path} has mode {stat.S_IMODE(st.st_mode):04o}; it must be 0600")


def read_private_file(path: Path, *, max_size: int = 1 << 16) -> bytes:
    """Read a 0600 file owned by us inside a 0700 directory, refusing symlinks.

    Raises:
        FileNotFoundError: the file does not exist (callers decide whether to create it).
        InsecurePath: symlink, wrong owner or permissions, or too large.
    """
    if not os.path.lexists(path.parent):
        raise FileNotFoundError(str(path))
    check_private_dir(path.parent)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        # ELOOP is how O_NOFOLLOW reports a symlink.
        raise InsecurePath(f"cannot open {path} safely (symlink?): {exc.strerror}") from exc
    try:
        _check_private_fd(fd, path)
        data = b""
        while len(data) <= max_size:
            chunk = os.read(fd, max_size + 1 - len(data))
            if not chunk:
                break
            data += chunk
        if len(data) > max_size:
            raise InsecurePath(f"{path} is larger than {max_size} bytes")
        return data
    finally:
        os.close(fd)


def write_private_file(path: Path, data: bytes, *, overwrite: bool = False) -> None:
    """Write ``path`` as a 0600 file in a 0700 directory.

    The file is written under a temporary name and moved into place, so a
    reader never sees a partial file.

    Args:
        overwrite: replace an existing file (atomically); otherwise refuse.

    Raises:
        FileExistsError: ``path`` already exists and not ``overwrite``.
        InsecurePath: the directory is not private.
    """
    ensure_private_dir(path.parent)
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(str(path))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, _FILE_MODE)
    try:
        os.fchmod(fd, _FILE_MODE)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # fails if path appeared meanwhile, unlike rename
    finally:
        os.unlink(tmp)
