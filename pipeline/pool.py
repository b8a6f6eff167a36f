"""Calls of one function spread over every core, each call's failure its own.

feedparser is pure Python and holds the GIL, so parsing the feeds of a run on every core takes
processes, not threads. `CallPool` runs the calls in a pebble process pool (a kept library that,
unlike `concurrent.futures.ProcessPoolExecutor`, fails only the call whose worker died, then
starts a new worker), started on the first call so that a run with nothing to parse starts no
process. Each call ends as a value or a one-line reason: an exception raised by the function,
or its worker process dying (a crash in a native library, the out-of-memory killer), never
takes another call down.

With one worker, or a function that cannot be sent to another process (a closure, a test's
fake), the calls run in this process, when their result is asked for.

A function given as `Imported` (its module and name) is sent to the workers without this process
importing its module, and `CallPool.start` starts the workers before the first call, each
importing that module at once: the parse processes of a run import feedparser and lxml while
this process fetches, and this one never does.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import signal
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Generic, Self, TypeVar

from pipeline.errors import unexpected_error

if TYPE_CHECKING:
    from pebble import ProcessPool

__all__ = ["CallFailed", "CallPool", "Imported", "Pending", "default_workers"]

T = TypeVar("T")


class CallFailed(Exception):
    """One call failed; its str() is the one-line reason."""


def default_workers() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Imported(Generic[T]):
    """A module-level function known by its module and name, imported where it is first called."""

    module: str
    name: str

    def load(self) -> Callable[..., T]:
        function: Callable[..., T] = getattr(importlib.import_module(self.module), self.name)
        return function

    def __call__(self, *args: object, **kwargs: object) -> T:
        return self.load()(*args, **kwargs)


def _load(function: Callable[..., object]) -> None:
    """A worker's first act: import the module of an `Imported` function. Never raises: pebble
    would start the worker again and again; a function that cannot be imported fails each call."""
    if isinstance(function, Imported):
        with contextlib.suppress(Exception):  # each call reports it, with its reason
            function.load()


def _ready() -> None:
    """The call that makes pebble start its workers (it has no other way to)."""


@dataclass(frozen=True)
class _Outcome(Generic[T]):
    """What crosses back from a worker: the value, or why there is none (plain text, so that an
    exception that cannot be pickled cannot break the pool)."""

    value: T | None = None
    error: str | None = None


def _guarded(function: Callable[..., T], *args: object) -> _Outcome[T]:
    try:
        return _Outcome(value=function(*args))
    except Exception as exc:
        return _Outcome(error=unexpected_error(exc))


class Pending(Generic[T]):
    """One call: `result()` waits for it and returns its value, or raises CallFailed."""

    def __init__(self, future: Future[_Outcome[T]] | None = None,
                 call: Callable[[], _Outcome[T]] | None = None) -> None:
        self._future = future
        self._call = call

    def result(self) -> T:
        if self._future is not None:
            try:
                outcome = self._future.result()
            except Exception as exc:
                raise CallFailed(_pool_failure(exc)) from None
        else:
            assert self._call is not None
            outcome = self._call()
        if outcome.error is not None:
            raise CallFailed(outcome.error)
        return outcome.value  # type: ignore[return-value]  # a value of T, None included


def _pool_failure(exc: BaseException) -> str:
    from pebble import ProcessExpired

    if isinstance(exc, ProcessExpired):
        code = exc.exitcode
        if code is not None and code < 0:
            try:
                how = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"killed by signal {-code}"
        else:
            how = f"exit code {code}"
        return f"its worker process died ({how})"
    return unexpected_error(exc)


class CallPool(Generic[T]):
    """Calls of `function`, on `workers` processes (default: one per core). Use as a context
    manager: leaving it waits for the workers to exit, or stops them if an exception is raised."""

    def __init__(self, function: Callable[..., T], workers: int | None = None) -> None:
        self._function = function
        self._workers = default_workers() if workers is None else workers
        self._pool: ProcessPool | None = None
        self.in_process = self._workers <= 1 or not _picklable(function)

    def submit(self, *args: object) -> Pending[T]:
        """Start a call (in this process: defer it until its result is asked for)."""
        if self.in_process:
            function = self._function
            return Pending(call=lambda: _guarded(function, *args))
        return Pending(future=self._process_pool().schedule(_guarded, args=(self._function, *args)))

    def start(self) -> None:
        """Start the worker processes now rather than at the first call (nothing in this process)."""
        if not self.in_process and self._pool is None:
            self._process_pool().schedule(_ready)

    def _process_pool(self) -> ProcessPool:
        if self._pool is None:
            import multiprocessing

            from pebble import ProcessPool

            # fork: a worker starts in milliseconds with the modules this process already has.
            self._pool = ProcessPool(max_workers=self._workers, context=multiprocessing.get_context("fork"),
                                     initializer=_load, initargs=(self._function,))
        return self._pool

    @property
    def workers(self) -> int:
        """The processes the calls are spread over (1: this one)."""
        return 1 if self.in_process else self._workers

    @property
    def started(self) -> bool:
        """Whether worker processes were started (not when every call ran in this process)."""
        return self._pool is not None

    def close(self, wait: bool = True) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        # pebble's close() and stop() carry no annotations (5.2).
        if wait:
            pool.close()  # type: ignore[no-untyped-call]
        else:
            pool.stop()  # type: ignore[no-untyped-call]
        pool.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close(wait=exc is None)


def _picklable(function: Callable[..., object]) -> bool:
    try:
        pickle.dumps(function)
    except Exception:  # pickle raises several types (PicklingError, AttributeError, TypeError)
        return False
    return True
