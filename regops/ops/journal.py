"""The pending-batch journal: which delete batches are in flight, so a killed run is settled.

Before a delete batch changes anything, :meth:`Journal.begin` writes a small
marker file ``<state dir>/pending/<batch id>.json`` (atomically: written and
fsynced under a temporary name, then renamed) and keeps an exclusive
``flock`` on it for as long as the batch runs. When the batch has reached a
final state and its results are in the audit log, the marker is removed.

A marker whose lock can be taken belongs to a run that died (the kernel drops
the lock even on SIGKILL): :meth:`Journal.unfinished` hands those to recovery
(:mod:`regops.ops.recovery`), which settles each batch from its audit-log
intents. A live run's markers are skipped. The marker holds no manifest (the
audit log has them) and no secret: the batch's repository, tag names, method,
placeholder bytes, the audit log's path and the registry's URL.

>>> with Journal().begin(entry) as pending:     # doctest: +SKIP
...     ...                                     # intents, then the deletes
...     pending.finish()                        # only when nothing is left to settle
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType

from regops.errors import StateError, ValidationError
from regops.fsutil import fsync_folder, write_all
from regops.locks import PRIVATE_FILE_MODE, ensure_private_dir, state_dir

log = logging.getLogger("regops.journal")

PENDING_SUBDIR = "pending"
MARKER_SUFFIX = ".json"
PARTIAL_SUFFIX = ".json.partial"  # a marker being written; never read as a batch
JOURNAL_FORMAT_VERSION = 1


def default_journal_dir() -> Path:
    """``<state dir>/pending``."""
    return state_dir() / PENDING_SUBDIR


@dataclass(frozen=True)
class BatchEntry:
    """What recovery needs to find and settle one batch."""

    run_id: str
    batch_id: str
    repository: str
    method: str
    tags: tuple[str, ...]
    audit_path: str
    registry_url: str
    placeholder_config: str | None = None  # base64
    placeholder_manifest: str | None = None  # base64
    v: int = JOURNAL_FORMAT_VERSION

    def to_json(self) -> bytes:
        data = asdict(self)
        data["tags"] = list(self.tags)
        return json.dumps(data, sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes, where: Path) -> BatchEntry:
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or data.get("v", 0) > JOURNAL_FORMAT_VERSION:
                raise ValueError("not a journal entry this regops knows")
            data["tags"] = tuple(data["tags"])
            known = {name for name in cls.__dataclass_fields__}
            return cls(**{k: v for k, v in data.items() if k in known})
        except (ValueError, TypeError, KeyError) as exc:
            raise ValidationError("journal", f"{where}: unreadable pending batch ({exc})") from None

    def placeholder_bytes(self) -> tuple[bytes, bytes] | None:
        """``(config, manifest)`` of the batch's placeholder, or None."""
        if self.placeholder_config is None or self.placeholder_manifest is None:
            return None
        try:
            return (
                base64.b64decode(self.placeholder_config, validate=True),
                base64.b64decode(self.placeholder_manifest, validate=True),
            )
        except (binascii.Error, ValueError):
            raise ValidationError(
                "journal", f"batch {self.batch_id}: placeholder is not valid base64"
            ) from None


def encode_bytes(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class PendingBatch:
    """A marker file held locked by this process (from :meth:`Journal.begin` or a claim)."""

    def __init__(self, path: Path, fd: int, entry: BatchEntry) -> None:
        self.path = path
        self.entry = entry
        self._fd: int | None = fd

    def __repr__(self) -> str:
        return f"<PendingBatch {self.entry.batch_id} {self.entry.repository}>"

    def finish(self) -> None:
        """The batch is settled and recorded: remove the marker, then drop the lock."""
        try:
            self.path.unlink(missing_ok=True)
            fsync_folder(self.path.parent)
        except OSError as exc:
            raise StateError("remove the pending-batch marker", self.path, exc) from None
        finally:
            self.release()

    def release(self) -> None:
        """Drop the lock, keeping the marker (the batch stays pending for recovery)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing drops the flock

    def __enter__(self) -> PendingBatch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class Journal:
    """The pending-batch markers in one directory."""

    def __init__(self, directory: Path | str | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_journal_dir()

    def __repr__(self) -> str:
        return f"Journal({str(self.directory)!r})"

    def begin(self, entry: BatchEntry) -> PendingBatch:
        """Write and lock the marker of a batch about to change the registry."""
        path = self.directory / f"{_file_name(entry.batch_id)}{MARKER_SUFFIX}"
        partial = path.with_name(path.name.removesuffix(MARKER_SUFFIX) + PARTIAL_SUFFIX)
        try:
            ensure_private_dir(self.directory)
            fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
        except OSError as exc:
            raise StateError("write the pending-batch marker", partial, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            write_all(fd, entry.to_json())
            os.fsync(fd)
            os.replace(partial, path)  # the lock is on the inode: it moves with the name
            fsync_folder(self.directory)
        except OSError as exc:
            os.close(fd)
            partial.unlink(missing_ok=True)
            raise StateError("write the pending-batch marker", path, exc) from None
        return PendingBatch(path, fd, entry)

    def unfinished(self) -> Iterator[PendingBatch]:
        """Markers of batches whose run has died, each claimed (locked) while yielded.

        Markers locked by a live run are skipped; an unreadable marker is
        logged and left where it is for a person to look at.
        """
        if not self.directory.is_dir():
            return
        for path in sorted(self.directory.iterdir()):
            if path.name.endswith(PARTIAL_SUFFIX):
                self._drop_stale_partial(path)
                continue
            if not path.name.endswith(MARKER_SUFFIX):
                continue
            claimed = self._claim(path)
            if claimed is not None:
                with claimed:
                    yield claimed

    def _claim(self, path: Path) -> PendingBatch | None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None  # finished meanwhile
        except OSError as exc:
            raise StateError("read the pending-batch marker", path, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None  # a live run holds it
        try:
            entry = BatchEntry.from_json(_read_all(fd), path)
        except ValidationError as exc:
            os.close(fd)
            log.error("%s", exc)
            return None
        if not path.exists():  # finished between our open and our lock
            os.close(fd)
            return None
        return PendingBatch(path, fd, entry)

    @staticmethod
    def _drop_stale_partial(path: Path) -> None:
        """A marker its run died writing: nothing was changed yet, so it goes."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path.unlink(missing_ok=True)
        except BlockingIOError:
            pass  # being written right now
        finally:
            os.close(fd)


def _file_name(batch_id: str) -> str:
    """The batch id as a file name (ids are run ids plus a number; refuse anything else)."""
    if not batch_id or any(c not in _ID_CHARS for c in batch_id):
        raise ValidationError("batch_id", f"{batch_id!r} is not a plain identifier")
    return batch_id


_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)
