"""What the user sees of the fetch stage: a progress bar while it runs, a table when it is done.

Kept apart from `pipeline.fetch` so fetching stays free of terminal concerns (it is also run
by the scheduler, where nobody watches), and apart from the CLI so any command can reuse it.
Feed names, URLs and error texts come from the outside world: they go into `Text` objects,
never into console markup, so a "[bold]" in a feed title is shown, not interpreted.

rich is imported where it is used: when nobody watches (no terminal), a run loads it while it
waits for the feeds' answers (`load_table`), not before it sends its requests.
"""

from __future__ import annotations

import importlib
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, TextIO

from pipeline.models import FetchResult, FetchStatus

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID
    from rich.text import Text

__all__ = ["FetchProgress", "load_table", "progress_console", "render_fetch_table", "status_text"]

_STYLES = {
    FetchStatus.NEW: "green",
    FetchStatus.UNCHANGED: "dim",
    FetchStatus.FAILED: "red",
    FetchStatus.MOVED: "yellow",
    FetchStatus.SKIPPED: "dim yellow",
}


def status_text(result: FetchResult) -> Text:
    """One feed's outcome in words: new / unchanged / failed: reason / moved → URL / skipped."""
    from rich.text import Text

    style = _STYLES[result.status]
    if result.status is FetchStatus.FAILED:
        return Text(f"failed: {result.error or 'unknown error'}", style=style)
    if result.status is FetchStatus.MOVED:
        return Text(f"moved → {result.permanent_redirect or result.final_url or '?'}", style=style)
    if result.status is FetchStatus.SKIPPED and result.error and result.error.startswith("disabled"):
        return Text("skipped (disabled)", style=style)
    return Text(result.status.value, style=style)


def render_fetch_table(results: Sequence[FetchResult], new_items: Mapping[str, int], console: Console) -> None:
    """Print one row per feed (in the order given) and a one-line summary under the table.

    `new_items` maps feed ids to the number of items the store had not seen before; feeds
    that brought no body show a dash rather than a misleading 0.
    """
    from rich.table import Table
    from rich.text import Text

    table = Table(title="Feeds", title_justify="left", expand=False)
    table.add_column("Feed", overflow="fold")
    table.add_column("Status", overflow="fold")
    table.add_column("New items", justify="right")
    table.add_column("Time", justify="right")
    for result in results:
        got_body = result.status in (FetchStatus.NEW, FetchStatus.MOVED)
        count = (
            str(new_items.get(result.feed.id, 0))
            if got_body
            else "0"
            if result.status is FetchStatus.UNCHANGED
            else "–"
        )
        took = "–" if result.status is FetchStatus.SKIPPED else f"{result.elapsed:.1f} s"
        table.add_row(Text(result.feed.name), status_text(result), count, took)
    console.print(table)

    by_status = Counter(result.status for result in results)
    parts = [f"{len(results)} feeds"] + [
        f"{by_status[status]} {status.value}" for status in FetchStatus if by_status[status]
    ]
    total_new = sum(new_items.get(r.feed.id, 0) for r in results if r.status in (FetchStatus.NEW, FetchStatus.MOVED))
    parts.append(f"{total_new} new items")
    timed = [r.elapsed for r in results if r.status is not FetchStatus.SKIPPED]
    if timed:
        parts.append(f"slowest {max(timed):.1f} s")
    console.print(Text(" · ".join(parts)))

    # The hint that brings a feed back is long; say it once rather than in every row.
    skipped_for_failures = [
        r.feed.id for r in results if r.status is FetchStatus.SKIPPED and r.error and "consecutive failures" in r.error
    ]
    if skipped_for_failures:
        console.print(
            Text(
                f"Skipped after repeated failures: {', '.join(skipped_for_failures)}. Re-enable with "
                "`pipeline feeds enable ID` or retry all with `pipeline run --retry-failed`.",
                style="yellow",
            )
        )


def load_table() -> None:
    """Import what render_fetch_table needs (most of rich): to pass as the `while_waiting` of a
    run, which calls it while the feeds' answers are awaited."""
    for module in ("rich.console", "rich.table", "rich.text"):
        importlib.import_module(module)


def progress_console(stream: TextIO) -> Console | None:
    """A console on `stream` for FetchProgress, or None where rich would draw no bar anyway:
    `stream` is not a terminal and neither FORCE_COLOR nor TTY_COMPATIBLE says to treat it as
    one (rich's own test; with either set, rich decides). None spares loading rich there."""
    if "FORCE_COLOR" not in os.environ and "TTY_COMPATIBLE" not in os.environ:
        try:
            terminal = stream.isatty()
        except (AttributeError, ValueError):  # no isatty, or a closed stream: rich says no terminal too
            terminal = False
        if not terminal:
            return None
    from rich.console import Console

    return Console(file=stream)


class FetchProgress:
    """A progress bar of feeds done / total, to pass as `fetch_feeds(..., on_result=progress.advance)`.

    Silent when the console is not a terminal (cron, pipes, logs), where a redrawn bar would
    only litter the output; transient on a terminal, so the table printed next replaces it.
    """

    def __init__(self, total: int, console: Console | None, description: str = "Fetching feeds") -> None:
        self._description = description
        self.done = 0
        self.failed = 0
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        if console is None or not console.is_terminal:
            return  # no bar, and rich.progress not even loaded (see progress_console)
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[last]}", style="dim", markup=False),  # feed names are not markup
            console=console,
            transient=True,
        )
        self._task = self._progress.add_task(description, total=total, last="")

    def __enter__(self) -> FetchProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def advance(self, result: FetchResult) -> None:
        """Count one finished feed; shows the last feed's name and how many failed so far."""
        self.done += 1
        if result.status is FetchStatus.FAILED:
            self.failed += 1
        if self._progress is None or self._task is None:
            return
        description = self._description if not self.failed else f"{self._description} ({self.failed} failed)"
        self._progress.update(self._task, advance=1, description=description, last=result.feed.name)

    __call__ = advance
