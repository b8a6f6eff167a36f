"""Archive stage: the static site in output/ (issue pages, index, topic pages, Atom feed).

Every file is written to a temporary file in the same folder and renamed over the old one,
so a reader (or a crash) never sees half a page; unchanged pages are not rewritten.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.models import Issue, RenderedIssue, TopicInfo
from pipeline.render import IssueLinks, Renderer, french_date


def atomic_write(path: Path, data: str | bytes) -> bool:
    """Write `data` to `path` atomically. Returns False (and writes nothing) if it is unchanged."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        if path.is_file() and path.read_bytes() == payload:
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as temp:
                temp.write(payload)
                temp.flush()
                os.fsync(temp.fileno())
            os.chmod(temp_name, 0o644)
            os.replace(temp_name, path)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise PipelineError(f"{path}: cannot write: {exc.strerror or exc}") from None
    return True


@dataclass(frozen=True)
class ArchiveEntry:
    """One issue as the archive pages list it."""

    issue: Issue

    @property
    def date(self) -> dt.date:
        return self.issue.date


class Archive:
    def __init__(self, output_dir: Path, renderer: Renderer, base_url: str, site_name: str):
        self.output_dir = Path(output_dir)
        self.renderer = renderer
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.site_name = site_name
        self.written: list[Path] = []  # files (re)written since this object was made

    def _write(self, relative: str, data: str | bytes) -> None:
        path = self.output_dir / relative
        if atomic_write(path, data):
            self.written.append(path)

    def issue_links(self, date: dt.date, dates: Sequence[dt.date]) -> IssueLinks:
        """Links of an issue page, with its neighbours among the archive's `dates`."""
        ordered = sorted(set(dates) | {date})
        index = ordered.index(date)
        previous = ordered[index - 1] if index > 0 else None
        following = ordered[index + 1] if index + 1 < len(ordered) else None
        return IssueLinks(
            web_url=f"{self.base_url}{date.isoformat()}/",
            archive_url=self.base_url,
            previous_href=f"../{previous.isoformat()}/index.html" if previous else None,
            previous_label=french_date(previous, year=True) if previous else None,
            next_href=f"../{following.isoformat()}/index.html" if following else None,
            next_label=french_date(following, year=True) if following else None,
        )

    def write_issue(self, rendered: RenderedIssue) -> None:
        folder = rendered.date.isoformat()
        self._write(f"{folder}/index.html", rendered.html)
        self._write(f"{folder}/digest.txt", rendered.text)

    def write_site(self, entries: Sequence[ArchiveEntry], topics: Sequence[TopicInfo]) -> None:
        """The pages that list issues: the archive home."""
        newest_first = sorted(entries, key=lambda e: e.date, reverse=True)
        months: list[tuple[str, list[dict[str, object]]]] = []
        for entry in newest_first:
            month = f"{french_date(entry.date, weekday=False, year=True).split(' ', 1)[1]}"
            counts = {t.id: 0 for t in topics}
            for story in entry.issue.stories():
                if story.primary_topic in counts:
                    counts[story.primary_topic] += 1
            row = {
                "date": entry.date,
                "href": f"{entry.date.isoformat()}/index.html",
                "title": french_date(entry.date, year=True),
                "menu": entry.issue.menu,
                "counts": [(t.theme, counts[t.id]) for t in topics if counts[t.id]],
            }
            if months and months[-1][0] == month:
                months[-1][1].append(row)
            else:
                months.append((month, [row]))
        self._write(
            "index.html",
            self.renderer.render_page("index.html.j2", site_name=self.site_name, months=months,
                                      base_url=self.base_url, topics=topics),
        )
