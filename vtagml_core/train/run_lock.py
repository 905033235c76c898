"""One writer per run folder: an exclusive lock held for the whole run.

Two ``train`` commands into the same ``--out`` would otherwise both train, interleave their
``log.jsonl`` lines and overwrite each other's results. :class:`RunLock` takes an OS-level lock
(``fcntl.flock`` through the ``filelock`` package) on ``<run>/.lock`` and records its owner
(PID, host, start time) in ``<run>/.lock.owner``, so a second writer is refused at once with the
holder's PID. The operating system releases the lock when its process dies, however it dies, so
a lock left by a killed run is taken over by the next one (it says so, naming the dead PID).

The lock is a singleton per path within a process (``is_singleton=True``): the run store
(:func:`vtagml_core.experiments.runs.train_or_reuse`) can hold it while the trainer it starts
takes it again.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Callable

from filelock import FileLock, Timeout

#: Lock file and owner record inside a run folder.
LOCK_FILE, OWNER_FILE = ".lock", ".lock.owner"
#: Seconds between "still waiting" messages when waiting for another writer.
WAIT_REPORT_SECONDS: float = 30.0


class RunFolderBusy(ValueError):
    """Another live process holds the run folder's lock."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def read_owner(folder: str | Path) -> dict | None:
    """The owner record of a run folder's lock, or None."""
    try:
        return json.loads((Path(folder) / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return None


class RunLock:
    """Exclusive lock on a run folder (module docstring).

    Args:
        folder: the run folder (created if missing).
        log: where the take-over of a dead owner's lock is reported.
    """

    def __init__(self, folder: str | Path, log: Callable[[str], None] = print) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.log = log
        self._lock = FileLock(str(self.folder / LOCK_FILE), thread_local=False, is_singleton=True)

    def _describe_holder(self) -> str:
        owner = read_owner(self.folder)
        if owner is None:
            return "another process"
        return (f"PID {owner.get('pid')} on {owner.get('host')} (since "
                f"{owner.get('started')})")

    def acquire(self, wait: bool = False) -> "RunLock":
        """Take the lock; without ``wait`` a held lock raises :class:`RunFolderBusy` at once.

        With ``wait`` it blocks until the holder finishes, reporting every
        :data:`WAIT_REPORT_SECONDS`.
        """
        first = not self._lock.is_locked
        while True:
            try:
                self._lock.acquire(timeout=WAIT_REPORT_SECONDS if wait else 0)
                break
            except Timeout:
                if not wait:
                    raise RunFolderBusy(
                        f"{self.folder} is in use by {self._describe_holder()} (a run training "
                        "into it, or an import); wait for it to finish (then --resume or read its "
                        "results), or use another folder") from None
                self.log(f"  waiting for {self._describe_holder()}, which holds {self.folder}")
        if first:
            previous = read_owner(self.folder)
            if previous and previous.get("pid") != os.getpid() and previous.get("host") == socket.gethostname() \
                    and not _alive(int(previous.get("pid", -1))):
                self.log(f"  {self.folder}: taking over the lock of PID {previous['pid']}, which is "
                         "no longer running")
            (self.folder / OWNER_FILE).write_text(json.dumps(
                {"pid": os.getpid(), "host": socket.gethostname(),
                 "started": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")
        return self

    def release(self) -> None:
        """Give the lock back (the outermost release of this process also clears the owner)."""
        if not self._lock.is_locked:
            return
        if self._lock.lock_counter == 1:
            (self.folder / OWNER_FILE).unlink(missing_ok=True)
        self._lock.release()

    @property
    def held(self) -> bool:
        return self._lock.is_locked

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


__all__ = ["LOCK_FILE", "OWNER_FILE", "RunFolderBusy", "RunLock", "read_owner"]
