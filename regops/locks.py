"""Run locks: one lock file per recipe so two runs (cron + a person) never overlap.

A lock is an exclusive ``fcntl.flock`` on ``<state dir>/locks/<name>.lock``.
The kernel drops it when the process dies (even on SIGKILL), so a crashed run
never leaves a stale lock behind. The file holds the holder's pid, start time
and command line, for the error another run gets.

>>> with RunLock("run_cleanup_policy"):
...     pass  # the work
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import sys
import time
from pathlib import Path
from types import TracebackType

import platformdirs

from regops.errors import LockHeldError, StateError, ValidationError

APP_NAME = "regops"
STATE_DIR_ENV = "REGOPS_STATE_DIR"  # overrides the platform state directory (tests, containers)
LOCK_SUBDIR = "locks"
LOCK_NAME_PATTERN = re.compile(r"\A[A-Za-z0-9._-]{1,100}\Z")  # a file name, no path parts
PRIVATE_DIR_MODE = 0o700  # state holds audit logs with manifests: owner only
PRIVATE_FILE_MODE = 0o600


def state_dir() -> Path:
    """regops' state directory: ``$REGOPS_STATE_DIR`` or the platform's user state dir."""
    override = os.environ.get(STATE_DIR_ENV)
    return Path(override) if override else Path(platformdirs.user_state_dir(APP_NAME))


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` and every missing parent readable by the owner only; return it.

    Folders that exist (``~/.local``, say) keep their mode. StateError, one line
    with the folder and the OS's reason, when one cannot be created.
    """
    missing = []
    current = Path(path)
    try:
        while not current.is_dir():
            missing.append(current)
            if current.parent == current:
                break
            current = current.parent
    except OSError as exc:  # e.g. a parent we may not look into
        raise StateError("create the folder", current, exc) from None
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=PRIVATE_DIR_MODE)  # mkdir(parents=True) gives parents 0777-umask
        except FileExistsError:
            if not folder.is_dir():  # a file where the folder should be
                raise StateError("create the folder", folder, _not_a_folder(folder)) from None
        except OSError as exc:
            raise StateError("create the folder", folder, exc) from None
    return path


def _not_a_folder(path: Path) -> OSError:
    return NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path))


def lock_path(name: str, directory: Path | None = None) -> Path:
    """Where the lock called ``name`` lives."""
    if not LOCK_NAME_PATTERN.match(name):
        raise ValidationError("lock name", f"{name!r} is not a plain file name")
    return (directory or state_dir() / LOCK_SUBDIR) / f"{name}.lock"


class RunLock:
    """An exclusive, non-blocking lock named ``name`` (a context manager)."""

    def __init__(self, name: str, directory: Path | None = None) -> None:
        self.name = name
        self.path = lock_path(name, directory)
        self._fd: int | None = None

    def __repr__(self) -> str:
        state = "held" if self._fd is not None else "free"
        return f"RunLock({self.name!r}, {state})"

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        """Take the lock or raise :class:`LockHeldError` naming the holder."""
        if self._fd is not None:
            return self
        ensure_private_dir(self.path.parent)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
        except OSError as exc:
            raise StateError("open the lock file", self.path, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise LockHeldError(self.path, holder) from None
        except OSError as exc:
            os.close(fd)
            raise StateError("lock", self.path, exc) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        try:
            _write_holder(fd)
        except OSError as exc:
            self.release()  # never keep a lock the caller does not know it holds
            raise StateError("write the lock file", self.path, exc) from None
        except BaseException:
            self.release()
            raise
        return self

    def release(self) -> None:
        """Drop the lock (the file stays; it is reused by the next run)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _write_holder(fd: int) -> None:
    """Record who holds the lock, for the message another run gets."""
    info = {
        "pid": os.getpid(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": [os.path.basename(sys.argv[0])] if sys.argv else [],
    }
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(info) + "\n").encode())
    os.fsync(fd)


def _read_holder(fd: int) -> dict:
    """The holder info written by :func:`_write_holder`; {} when unreadable."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = os.read(fd, 4096)
        info = json.loads(data.decode() or "{}")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}
