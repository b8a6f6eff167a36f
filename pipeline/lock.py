"""The one lock of the project: an exclusive `fcntl.flock` on a file, for every "one at a time".

Three locks use it:

* the build lock (`BuildLock`, `build_lock`): at most one build writes an archive (its store and
  its output/) at a time. `pipeline run`, `pipeline rebuild` and the scheduler take it on
  `<db>.lock`. One lock per archive rather than per date, because every build also rewrites pages
  shared by all dates (index, topic pages, feed, the neighbours' previous/next links); a per-date
  lock would still let two builds race there. A second build waits a bounded time, then fails
  with `RunFailed` (exit code 1) naming the holder.
* the send lock (`<db>.send-lock`) and the recipients file's lock (`<file>.lock`), through
  `exclusive`: a second `pipeline send`, or a second edit of the recipients file, fails at once.

Why flock and not a PID file: the kernel drops a flock when its holder dies, even on SIGKILL or
power loss of a process, so a stale lock cannot exist and no PID has to be guessed at. The file
itself stays on disk; its content (who holds it, since when) is only used in messages. The lock
is per open file, so two holders in one process exclude each other too.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import PipelineError, RunFailed

DEFAULT_LOCK_TIMEOUT = 60.0
_POLL_SECONDS = 0.05  # flock has no timeout of its own: poll a non-blocking attempt


def lock_path_for(db_path: Path) -> Path:
    """The build lock of an archive: beside its database, so two archives never share a lock."""
    db_path = Path(db_path)
    return db_path.with_name(db_path.name + ".lock")


class FileLock:
    """An exclusive lock on one file. Use `acquire`/`release`, or `hold(...)` as a context.

    `what` says what the lock keeps to one at a time, for the message of whoever finds it taken
    ("another `pipeline send` on this database")."""

    kind = "lock"  # in "cannot open the lock"

    def __init__(self, path: Path, what: str = "another process") -> None:
        self.path = Path(path)
        self.what = what
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def holder(self) -> str | None:
        """What the current holder wrote into the lock file (pid, purpose, since when), if anything."""
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            return None
        return text or None

    def busy(self, timeout: float) -> PipelineError:
        """The error when the lock stayed taken for `timeout` seconds."""
        return PipelineError(f"{self.path}: {self.what} is already running; try again when it ends")

    def _open(self) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise PipelineError(f"{self.path}: cannot open the {self.kind}: {exc.strerror or exc}") from None

    def acquire(self, timeout: float, purpose: str) -> None:
        """Take the lock, waiting at most `timeout` seconds; `busy(timeout)` is raised when another
        holder keeps it. `purpose` is written into the file for the messages of others."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path}: lock already held by this object")
        fd = self._open()
        deadline = time.monotonic() + max(timeout, 0.0)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if not isinstance(exc, BlockingIOError):  # e.g. ENOLCK on a network file system
                        raise PipelineError(f"{self.path}: cannot lock: {exc.strerror or exc}") from None
                    if time.monotonic() >= deadline:
                        raise self.busy(timeout) from None
                    time.sleep(_POLL_SECONDS)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        # Say who holds it, for the message of whoever waits next. Only informative: the
        # flock, not this text, is the lock, so a half-written line cannot do harm.
        since = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        note = f"pid {os.getpid()}: {purpose}, since {since}\n".encode()
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, note, 0)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the last descriptor drops the flock

    @contextlib.contextmanager
    def hold(self, timeout: float, purpose: str) -> Iterator[FileLock]:
        self.acquire(timeout, purpose)
        try:
            yield self
        finally:
            self.release()


class BuildLock(FileLock):
    """The lock of one archive's builds (see the module docstring)."""

    kind = "build lock"

    def __init__(self, path: Path) -> None:
        super().__init__(path, "another build")

    @classmethod
    def for_database(cls, db_path: Path) -> BuildLock:
        return cls(lock_path_for(db_path))

    def busy(self, timeout: float) -> PipelineError:
        who = self.holder() or "unknown holder"
        return RunFailed(
            f"another build is running on this archive ({who}); gave up waiting after {timeout:g} s for "
            f"{self.path} — try again when it has finished, or raise --lock-timeout"
        )


@contextlib.contextmanager
def build_lock(db_path: Path, timeout: float, purpose: str, held: BuildLock | None = None) -> Iterator[BuildLock]:
    """Hold the archive's lock for a build. `held` is a lock the caller already holds (the
    scheduler takes it before checking whether the issue exists): then nothing is re-taken."""
    if held is not None:
        if not held.held or held.path != lock_path_for(db_path):
            raise ValueError(f"the lock passed in is not held on {lock_path_for(db_path)}")
        yield held
        return
    lock = BuildLock.for_database(db_path)
    with lock.hold(timeout, purpose):
        yield lock


@contextlib.contextmanager
def exclusive(path: Path, what: str) -> Iterator[FileLock]:
    """Hold the lock file `path` or fail at once: "`path`: `what` is already running; try again
    when it ends" (PipelineError, exit code 2)."""
    with FileLock(path, what).hold(0, what) as lock:
        yield lock
