"""Archive stage: the static site in output/.

    index.html              issues by month, newest first (teasers, stories per topic)
    YYYY-MM-DD/index.html   one issue (rendered by `render`), digest.txt beside it
    topics/<topic>.html     every story of a topic across issues, newest first
    feed.xml                Atom feed of the latest issues
    search.html             offline search over search-index.json (the only page with a script)

Every file is written to a temporary file in its folder and renamed over the old one, so a
reader (or a crash) never sees half a page; a page whose bytes did not change is not touched,
so its mtime and inode stay and an incremental run rewrites only what a new issue changed.

The folder is the archive's only if it is empty or carries the archive's manifest,
`.tech-matin-archive.json`: the files the archive wrote there (with their sha256) and the key of
what the listing pages were last rendered from. Nothing else is ever overwritten or deleted: a
folder that holds someone's files is refused with one line. A folder built by a version that
kept no manifest is recognised by its layout and adopted (see `Archive.__init__`).
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import datetime as dt
import errno
import functools
import hashlib
import importlib.util
import json
import os
import re
import tempfile
import zoneinfo
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from markupsafe import escape

from pipeline import render
from pipeline.errors import PipelineError, RunFailed
from pipeline.models import Issue, RenderedIssue, Story, TopicInfo
from pipeline.render import IssueLinks, Renderer, french_date, french_spacing, safe_url

# The feed lists the latest issues only: a reader subscribes for what comes next, and a feed
# holding a whole year would be re-downloaded in full by every client on every poll.
FEED_ENTRIES = 30
MANIFEST_NAME = ".tech-matin-archive.json"
MANIFEST_FORMAT = "tech-matin-archive"
# Files a folder may hold and still count as empty: version control's placeholders.
PLACEHOLDERS = frozenset({".gitkeep", ".keep"})
LISTING_PAGES = ("index.html", "feed.xml", "search-index.json", "search.html")  # + topics/<id>.html
_ISSUE_FOLDER = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_ISSUE_FILES = frozenset({"index.html", "digest.txt"})
# Threads writing pages in `Archive.parallel_writes`: enough fsyncs in flight to share journal commits.
WRITER_THREADS = 8
TEMPORARY_SUFFIX = ".tmp"  # a page being written: `.index.html.1a2b3c.tmp`, then renamed
SEARCH_SCRIPT = "search.js"  # in the templates folder; inlined into search.html with a CSP hash
_TOPIC_FILE = re.compile(r"^[a-z0-9_-]+$")
# Characters XML 1.0 cannot carry at all (escaping does not help): dropped from feed text.
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def atomic_write(path: Path, data: str | bytes) -> bool:
    """Write `data` to `path` atomically. Returns False (and writes nothing) if it is unchanged.

    The bytes go to a temporary file in the same folder (same file system, so the rename is
    atomic), are flushed to disk, then renamed over `path`: at any instant `path` is either the
    old file or the new one. On any failure the temporary file is removed. On Linux the
    temporary file has no name while it is written (O_TMPFILE) and gets one just before the
    rename, so even a SIGKILL mid-write leaves nothing behind.
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    if holds(path, payload):
        return False
    replace(path, payload)
    return True


def holds(path: Path, payload: bytes) -> bool:
    """Whether the file at `path` holds exactly `payload` (False if there is none)."""
    try:
        # Comparing sizes first spares reading most changed files back.
        return path.stat().st_size == len(payload) and path.read_bytes() == payload
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise RunFailed(f"{path}: cannot read: {exc.strerror or exc}") from None


def replace(path: Path, payload: bytes) -> None:
    """Put `payload` at `path` atomically (see atomic_write), whatever the file holds."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not _write_unnamed_then_rename(path, payload):
            _write_temporary_then_rename(path, payload)
    except OSError as exc:
        # Disk full or read-only output: the run failed (exit 1), the previous page is intact.
        raise RunFailed(f"{path}: cannot write: {exc.strerror or exc}") from None


def _temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.urandom(6).hex()}{TEMPORARY_SUFFIX}")


def _write_unnamed_then_rename(path: Path, payload: bytes) -> bool:
    """The O_TMPFILE way; False where the system or the file system does not offer it."""
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None:
        return False
    try:
        handle = os.open(path.parent, flag | os.O_WRONLY, 0o644)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
            return False
        raise
    with os.fdopen(handle, "wb") as temp:
        temp.write(payload)
        temp.flush()
        os.fsync(temp.fileno())
        os.fchmod(temp.fileno(), 0o644)
        temp_name = _temporary_name(path)
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            # A name only now, for the rename. A directory fd makes os.link call linkat() with
            # AT_SYMLINK_FOLLOW (plain link() would link the /proc symbolic link itself).
            os.link(f"/proc/self/fd/{temp.fileno()}", temp_name.name, dst_dir_fd=folder, follow_symlinks=True)
        except OSError:
            return False  # no /proc: the named way below
        finally:
            os.close(folder)
    try:
        os.replace(temp_name, path)
    except BaseException:
        temp_name.unlink(missing_ok=True)
        raise
    return True


def _write_temporary_then_rename(path: Path, payload: bytes) -> None:
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX, dir=path.parent)
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


# Starts rendering a template with a context (plain data) and returns what gives the page.
PageStarter = Callable[[str, dict[str, object]], Callable[[], str]]


class _Abandoned(RunFailed):
    """A page write not started because an earlier one failed."""


class ArchiveEntry:
    """One issue as the archive pages list it. Made from an Issue, or from the issue as stored
    (`ArchiveEntry.stored`): then the stored text is what the listing key is made from, and the
    issue is decoded only if a listing page has to be rendered (not in a rebuild that changed
    nothing, where decoding a year of issues was most of the publication's time)."""

    def __init__(self, issue: Issue | None = None, *, date: dt.date | None = None, source: str = "",
                 load: Callable[[str], Issue] | None = None):
        if issue is not None:
            self.date = issue.date
        elif date is not None and load is not None:
            self.date = date
        else:
            raise ValueError("an ArchiveEntry needs an issue, or a date, a source and a loader")
        self._issue = issue
        self.source = source  # the issue as stored (text): its content, for the listing key
        self._load = load

    @classmethod
    def stored(cls, date: dt.date, source: str, load: Callable[[str], Issue]) -> ArchiveEntry:
        return cls(date=date, source=source, load=load)

    @property
    def issue(self) -> Issue:
        if self._issue is None:
            assert self._load is not None
            self._issue = self._load(self.source)
        return self._issue

    def content_key(self) -> str:
        """What the listing pages use of this issue, as text (deterministic)."""
        return self.source or repr(self.issue)


@dataclass(frozen=True)
class TopicStory:
    """A story on a topic page: the story and the issue where it appeared."""

    date: dt.date
    date_label: str  # "mardi 6 mai 2025"
    issue_href: str  # relative to the topic page
    story: Story
    url: str  # the article's safe http(s) URL, or ""


def _month_label(date: dt.date) -> str:
    return french_date(date, weekday=False, year=True).split(" ", 1)[1]  # "mai 2025"


def _topic_counts(issue: Issue, topics: Sequence[TopicInfo]) -> dict[str, int]:
    """Stories per topic of one issue, counting a story under each of its topics, as the topic
    pages list it (so the index's "AI Act : 3" matches what the AI Act page shows)."""
    counts = {t.id: 0 for t in topics}
    for story in issue.stories():
        for topic in story.topics:
            if topic in counts:
                counts[topic] += 1
    return counts


@functools.cache
def _code_version() -> str:
    """The code of the listing pages (this module, render's helpers, the feed writer's sources): a
    new version renders them again even when the issues did not change. The feed writer is found,
    not imported (importing it costs a run that renders nothing 20 ms); it has no __version__."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(Path(render.__file__).read_bytes())
    writer = importlib.util.find_spec("feedgenerator")
    if writer is not None and writer.origin:
        for source in sorted(Path(writer.origin).parent.rglob("*.py")):
            digest.update(source.read_bytes())
    return digest.hexdigest()


def _xml_text(text: str) -> str:
    return _NOT_XML.sub("", text)


@dataclass
class Manifest:
    """The archive's record of its folder: every file it wrote there (relative path → sha256 of
    the bytes), and the key of the inputs the listing pages were last rendered from. Its file is
    also the marker that the folder belongs to the archive. Deterministic: the same site gives the
    same manifest, byte for byte."""

    files: dict[str, str] = field(default_factory=dict)
    listing_key: str = ""

    def to_bytes(self) -> bytes:
        document = {"format": MANIFEST_FORMAT, "version": 1, "listing_key": self.listing_key,
                    "files": dict(sorted(self.files.items()))}
        return (json.dumps(document, indent=1, sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def load(cls, path: Path) -> Manifest:
        """Read a manifest; an empty file is a manifest with nothing recorded (`touch` adopts a
        folder by hand). Anything else that is not ours is an error, never guessed at."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise PipelineError(f"{path}: cannot read the archive's manifest: {exc.strerror or exc}") from None
        if not data.strip():
            return cls()
        try:
            document = json.loads(data)
        except (ValueError, RecursionError):
            document = None
        files = document.get("files", {}) if isinstance(document, dict) else None
        key = document.get("listing_key", "") if isinstance(document, dict) else None
        if (not isinstance(document, dict) or document.get("format") != MANIFEST_FORMAT
                or not isinstance(files, dict) or not isinstance(key, str)
                or not all(isinstance(v, str) and _is_site_path(k) for k, v in files.items())):
            raise PipelineError(f"{path}: not a manifest of this archive; move it away, or empty it to adopt "
                                "the folder with nothing recorded")
        return cls(files=dict(files), listing_key=key)


def _is_site_path(relative: object) -> bool:
    """A relative path inside the folder (what a manifest may name, and so what may be deleted)."""
    if not isinstance(relative, str) or not relative or relative.startswith("/") or "\\" in relative:
        return False
    return all(part not in ("", ".", "..") for part in relative.split("/"))


def _is_temporary(name: str) -> bool:
    return name.startswith(".") and name.endswith(TEMPORARY_SUFFIX)


def _looks_like_an_old_archive(folder: Path) -> bool:
    """A folder built before the manifest existed: nothing but the archive's own names (home,
    feed, search, topics/<id>.html, YYYY-MM-DD/{index.html,digest.txt}), with at least the feed
    and either the home and one issue page, or the search index (what the old `make clean`,
    which removed the issues and the home, left). Someone's `index.html` and
    `topics/my-notes.html` is not one."""
    top = {entry.name: entry for entry in folder.iterdir() if entry.name not in PLACEHOLDERS
           and not _is_temporary(entry.name)}
    issues = [entry for name, entry in top.items() if _ISSUE_FOLDER.match(name)]
    if "feed.xml" not in top or not ((issues and "index.html" in top) or "search-index.json" in top):
        return False
    for name, entry in top.items():
        if entry in issues:
            if not entry.is_dir() or entry.is_symlink():
                return False
            names = {e.name for e in entry.iterdir() if not _is_temporary(e.name)}
            if not names <= _ISSUE_FILES or "index.html" not in names:
                return False
        elif name == "topics":
            if not entry.is_dir() or entry.is_symlink():
                return False
            if not all(_is_temporary(e.name) or (e.suffix == ".html" and _TOPIC_FILE.match(e.stem))
                       for e in entry.iterdir()):
                return False
        elif name not in LISTING_PAGES or not entry.is_file():
            return False
    return True


def claim_folder(output_dir: Path) -> Manifest:
    """The manifest of `output_dir` if the archive may write there: the folder does not exist yet,
    is empty (but for a placeholder), carries the manifest, or is an archive of an earlier version.
    Otherwise a one-line PipelineError naming the folder. A symbolic link is judged by its target."""
    folder = output_dir.resolve()
    where = str(output_dir) if folder == output_dir.absolute() else f"{output_dir} (-> {folder})"
    if not folder.exists():
        return Manifest()
    if not folder.is_dir():
        raise PipelineError(f"{where}: the output folder is not a folder")
    marker = folder / MANIFEST_NAME
    if marker.exists() or marker.is_symlink():
        if marker.is_symlink() or not marker.is_file():
            raise PipelineError(f"{where}: {MANIFEST_NAME} is not a regular file; refusing to write there")
        return Manifest.load(marker)
    try:
        others = sorted(e.name for e in folder.iterdir() if e.name not in PLACEHOLDERS)
    except OSError as exc:
        raise PipelineError(f"{where}: cannot read the output folder: {exc.strerror or exc}") from None
    if not others or _looks_like_an_old_archive(folder):
        return Manifest()
    raise PipelineError(
        f"{where}: refusing to write into a folder that is not an archive (it holds {others[0]!r}"
        f"{f' and {len(others) - 1} more' if len(others) > 1 else ''} and no {MANIFEST_NAME}); "
        f"use an empty folder, or create an empty {MANIFEST_NAME} in it to let the archive write there")


@functools.cache
def _issue_feed() -> type[Any]:
    """The feed writer class, made when a feed is first written (see _code_version)."""
    import feedgenerator  # type: ignore[import-untyped]  # the package ships no type hints

    class _IssueFeed(feedgenerator.Atom1Feed):  # type: ignore[misc]  # untyped base class
        """feedgenerator's Atom 1.0 writer with what a digest needs on top: each entry also links
        its plain-text version, each entry stands on a line of its own (a diff of the file reads
        entry by entry), and an empty archive's feed is dated 1970 rather than now (the file must not
        change when nothing changed)."""

        def write_items(self, handler: Any) -> None:
            for item in self.items:
                handler.ignorableWhitespace("\n")
                handler.startElement("entry", self.item_attributes(item))
                self.add_item_elements(handler, item)
                handler.endElement("entry")
            handler.ignorableWhitespace("\n")

        def add_item_elements(self, handler: Any, item: dict[str, Any]) -> None:
            super().add_item_elements(handler, item)
            handler.addQuickElement("link", "", {"rel": "alternate", "type": "text/plain", "href": item["text_link"]})

        def latest_post_date(self) -> dt.datetime:
            if not self.items:
                return dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
            latest: dt.datetime = max(item["updateddate"] for item in self.items)
            return latest

    return _IssueFeed


class Archive:
    def __init__(self, output_dir: Path, renderer: Renderer, base_url: str, site_name: str):
        self.output_dir = Path(output_dir)
        self.renderer = renderer
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.site_name = site_name
        self.written: list[Path] = []  # files (re)written since this object was made
        self.removed: list[Path] = []  # stale generated files removed (topic pages of dropped topics)
        # Checked before anything is written: a folder holding someone else's files is refused.
        self.manifest = claim_folder(self.output_dir)
        self._saved_manifest: bytes | None = None  # what the manifest file holds, once known
        self._last_dates: tuple[tuple[dt.date, ...], list[dt.date]] | None = None
        self._writers: ThreadPoolExecutor | None = None  # see parallel_writes
        self._pending: dict[Path, Future[None]] = {}  # writes in flight, in the order they were asked for
        self._failed = False  # one of them failed

    def _write(self, relative: str, data: str | bytes) -> None:
        payload = data.encode("utf-8") if isinstance(data, str) else data
        if self._saved_manifest is None:
            self.save_manifest()  # the marker comes first: a crash after it leaves a folder we can reuse
        path = self.output_dir / relative
        self._settle(path)  # a page is never written by two threads at once: the last bytes win
        if not holds(path, payload):
            if self._writers is not None:
                if self._failed:  # a write failed: no new one starts (the failure is raised on leaving)
                    self._settle_all()
                future = self._writers.submit(self._replace_unless_failed, path, payload)
                future.add_done_callback(self._note_failure)
                self._pending[path] = future
            else:
                replace(path, payload)
            self.written.append(path)
        self.manifest.files[relative] = hashlib.sha256(payload).hexdigest()

    @contextlib.contextmanager
    def parallel_writes(self, threads: int = WRITER_THREADS) -> Iterator[None]:
        """Within this block, the pages that changed are written by `threads` threads, each write
        still atomic. Every write ends with an fsync, and a file system commits the fsyncs that
        wait together in one journal commit: a rebuild that rewrote hundreds of pages waited for
        each in turn. Whether a page changed is still decided when it is asked for, so `written`
        is as without threads; on leaving the block every write has ended (the first failure is
        raised once all have), and the manifest is saved only after the pages it lists."""
        if self._writers is not None:  # already inside such a block
            yield
            return
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="archive-write") as writers:
            self._writers = writers
            try:
                yield
            finally:
                self._writers = None
                self._settle_all()

    def _replace_unless_failed(self, path: Path, payload: bytes) -> None:
        """A write waiting for a thread does not start once another has failed: the build stops
        at its first failure, but for the writes already under way (at most threads - 1)."""
        if self._failed:
            raise _Abandoned(f"{path}: not written after an earlier failure")
        replace(path, payload)

    def _note_failure(self, future: Future[None]) -> None:
        if future.exception() is not None:
            self._failed = True

    def _settle(self, path: Path) -> None:
        """Wait for a write of `path` in flight, if any (its failure is raised)."""
        future = self._pending.pop(path, None)
        if future is not None and future.exception() is not None:  # exception() waits for the write
            self._pending[path] = future
            self._settle_all()  # raises the first failure

    def _settle_all(self) -> None:
        """Wait for every write in flight; the first failure is raised once all have ended."""
        pending, self._pending = self._pending, {}
        wait(pending.values())
        self._failed = False
        failures = [error for error in (future.exception() for future in pending.values()) if error is not None]
        if failures:  # the first real one, not a write abandoned because of it
            raise next((error for error in failures if not isinstance(error, _Abandoned)), failures[0])

    def _remove(self, relative: str) -> None:
        """Delete a file the archive wrote (per its manifest); anything else stays."""
        if relative not in self.manifest.files:
            return
        path = self.output_dir / relative
        self._settle(path)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise RunFailed(f"{path}: cannot remove: {exc.strerror or exc}") from None
        del self.manifest.files[relative]
        self.removed.append(path)

    def save_manifest(self) -> None:
        """Write the manifest if it changed (atomically, like every page; not counted as written),
        after the pages it lists (writes in flight end first)."""
        self._settle_all()
        payload = self.manifest.to_bytes()
        if payload != self._saved_manifest:
            atomic_write(self.output_dir / MANIFEST_NAME, payload)
            self._saved_manifest = payload

    # -- issue pages

    def issue_links(self, date: dt.date, dates: Sequence[dt.date]) -> IssueLinks:
        """Links of an issue page, with its neighbours among the archive's `dates`."""
        ordered = self._sorted_dates(tuple(dates))
        index = bisect.bisect_left(ordered, date)
        if index == len(ordered) or ordered[index] != date:
            ordered = [*ordered[:index], date, *ordered[index:]]
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

    def _sorted_dates(self, dates: tuple[dt.date, ...]) -> list[dt.date]:
        # A rebuild asks for the links of every issue among the same dates: sort them once.
        if self._last_dates is None or self._last_dates[0] != dates:
            self._last_dates = (dates, sorted(set(dates)))
        return self._last_dates[1]

    def write_issue(self, rendered: RenderedIssue) -> None:
        folder = rendered.date.isoformat()
        self._write(f"{folder}/index.html", rendered.html)
        self._write(f"{folder}/digest.txt", rendered.text)

    def issue_pages(self, date: dt.date) -> list[str]:
        """The pages of an issue that the archive wrote and that are still there (relative paths)."""
        folder = date.isoformat()
        return [f"{folder}/{name}" for name in sorted(_ISSUE_FILES)
                if f"{folder}/{name}" in self.manifest.files and (self.output_dir / folder / name).is_file()]

    def wait_for_issue(self, date: dt.date) -> None:
        """Wait until the issue's pages asked for are on disk (see parallel_writes)."""
        folder = self.output_dir / date.isoformat()
        for name in sorted(_ISSUE_FILES):
            self._settle(folder / name)

    def remove_issue(self, date: dt.date) -> None:
        """Delete an issue's pages (only those the archive wrote, per its manifest) and its folder
        if nothing else is left in it; the caller publishes the listing pages again afterwards."""
        folder = date.isoformat()
        for name in sorted(_ISSUE_FILES):
            self._remove(f"{folder}/{name}")
        with contextlib.suppress(OSError):  # not empty (someone's file) or already gone: left as is
            (self.output_dir / folder).rmdir()
        self.save_manifest()

    def has_issue(self, date: dt.date, html_sha256: str, text_sha256: str) -> bool:
        """True when the issue's two files are on disk with exactly these contents."""
        self.wait_for_issue(date)
        folder = self.output_dir / date.isoformat()
        try:
            intact = (hashlib.sha256((folder / "index.html").read_bytes()).hexdigest() == html_sha256
                      and hashlib.sha256((folder / "digest.txt").read_bytes()).hexdigest() == text_sha256)
        except OSError:
            return False
        if intact:  # the pages are the archive's, as rendered: the manifest says so too
            self.manifest.files[f"{date.isoformat()}/index.html"] = html_sha256
            self.manifest.files[f"{date.isoformat()}/digest.txt"] = text_sha256
        return intact

    # -- the pages that list issues

    def write_site(self, entries: Sequence[ArchiveEntry], topics: Sequence[TopicInfo],
                   start_page: PageStarter | None = None) -> None:
        """Every page that lists issues: index, topic pages, Atom feed, search page and index.
        They are rendered only when what they are made from changed since the last time (the
        listing key of the manifest) or one of them is missing or altered on disk; then each is
        rendered in full from `entries` and written only if its bytes changed. `start_page`
        renders the index and the topic pages elsewhere (other processes) while this one makes
        the feed and the search index; by default they are rendered here, one after the other."""
        for topic in topics:
            if not _TOPIC_FILE.match(topic.id):
                raise PipelineError(f"topic id {topic.id!r} cannot name a page (letters, digits, _ and - only)")
        newest_first = sorted(entries, key=lambda e: e.date, reverse=True)
        pages = [*LISTING_PAGES, *(f"topics/{t.id}.html" for t in topics)]
        key = self._listing_key(newest_first, topics)
        if key != self.manifest.listing_key or not all(self._intact(page) for page in pages):
            start = start_page or self._render_now
            index = start("index.html.j2", self._index_context(newest_first, topics))
            topic_pages = [(topic, start("topic.html.j2", self._topic_context(topic, newest_first, topics)))
                           for topic in topics]
            feed = self.atom_feed(newest_first)
            self._write("index.html", index())
            for topic, page in topic_pages:
                self._write(f"topics/{topic.id}.html", page())
            self._write("feed.xml", feed)
            self._write("search-index.json", self.search_index(newest_first, topics))
            self._write("search.html", self.search_page(topics))
            self.manifest.listing_key = key
        self._remove_stale_topic_pages(topics)
        self.save_manifest()

    def _listing_key(self, newest_first: Sequence[ArchiveEntry], topics: Sequence[TopicInfo]) -> str:
        """sha256 of everything the listing pages are made from: the issues as stored (repr of
        frozen dataclasses: deterministic), the topics, the templates, the site's name and URL,
        and the code that renders them."""
        digest = hashlib.sha256()
        for part in (_code_version(), self.renderer.fingerprint, self.base_url, self.site_name, repr(tuple(topics)),
                     *(entry.content_key() for entry in newest_first)):
            digest.update(part.encode("utf-8"))
            digest.update(b"\0")
        return digest.hexdigest()

    def _intact(self, relative: str) -> bool:
        """True when the file is on disk with exactly the bytes the manifest says we wrote."""
        recorded = self.manifest.files.get(relative)
        if recorded is None:
            return False
        self._settle(self.output_dir / relative)
        try:
            return hashlib.sha256((self.output_dir / relative).read_bytes()).hexdigest() == recorded
        except OSError:
            return False

    def _render_now(self, template: str, context: dict[str, object]) -> Callable[[], str]:
        page = self.renderer.render_page(template, **cast(dict[str, Any], context))
        return lambda: page

    def index_page(self, newest_first: Sequence[ArchiveEntry], topics: Sequence[TopicInfo]) -> str:
        return self._render_now("index.html.j2", self._index_context(newest_first, topics))()

    def _index_context(self, newest_first: Sequence[ArchiveEntry], topics: Sequence[TopicInfo]) -> dict[str, object]:
        """What index.html.j2 is rendered with (plain data: it can be sent to another process)."""
        months: list[tuple[str, list[dict[str, object]]]] = []
        for entry in newest_first:
            month = _month_label(entry.date)
            counts = _topic_counts(entry.issue, topics)
            row = {
                "date": entry.date,
                "href": f"{entry.date.isoformat()}/index.html",
                "text_href": f"{entry.date.isoformat()}/digest.txt",
                "title": french_date(entry.date, year=True),
                "menu": entry.issue.menu,
                "stories": len(entry.issue.stories()),
                "counts": [(t, counts[t.id]) for t in topics if counts[t.id]],
            }
            if months and months[-1][0] == month:
                months[-1][1].append(row)
            else:
                months.append((month, [row]))
        totals = {t.id: 0 for t in topics}
        for entry in newest_first:
            for topic_id, count in _topic_counts(entry.issue, topics).items():
                totals[topic_id] += count
        return {"site_name": self.site_name, "months": months, "base_url": self.base_url, "topics": tuple(topics),
                "totals": totals, "issue_count": len(newest_first)}

    def topic_page(self, topic: TopicInfo, newest_first: Sequence[ArchiveEntry],
                   topics: Sequence[TopicInfo]) -> str:
        return self._render_now("topic.html.j2", self._topic_context(topic, newest_first, topics))()

    def _topic_context(self, topic: TopicInfo, newest_first: Sequence[ArchiveEntry],
                       topics: Sequence[TopicInfo]) -> dict[str, object]:
        """What topic.html.j2 is rendered with (plain data: it can be sent to another process)."""
        months: list[tuple[str, list[TopicStory]]] = []
        count = 0
        for entry in newest_first:
            for story in entry.issue.stories():
                if topic.id not in story.topics:
                    continue
                item = TopicStory(
                    date=entry.date, date_label=french_date(entry.date, year=True),
                    issue_href=f"../{entry.date.isoformat()}/index.html", story=story, url=safe_url(story.url),
                )
                count += 1
                month = _month_label(entry.date)
                if months and months[-1][0] == month:
                    months[-1][1].append(item)
                else:
                    months.append((month, [item]))
        return {"site_name": self.site_name, "topic": topic, "topics": tuple(topics), "months": months,
                "count": count}

    def _remove_stale_topic_pages(self, topics: Sequence[TopicInfo]) -> None:
        """A topic dropped from topics.yaml leaves no page behind (nothing links to it any more).
        Only pages the archive wrote are removed: someone's topics/my-notes.html stays."""
        current = {f"topics/{t.id}.html" for t in topics}
        for relative in sorted(self.manifest.files):
            if relative.startswith("topics/") and relative not in current:
                self._remove(relative)

    # -- Atom feed

    def atom_feed(self, newest_first: Sequence[ArchiveEntry]) -> bytes:
        """An Atom 1.0 feed of the latest issues, written by feedgenerator (the writer pelican
        uses). Ids are the issues' URLs; every date comes from the issue date at the newsletter's
        issue time (never the wall clock), so the feed is byte-identical when nothing changed."""
        feed = _issue_feed()(
            title=_xml_text(self.site_name), link=self.base_url, feed_url=f"{self.base_url}feed.xml",
            feed_guid=self.base_url, description="", subtitle=_xml_text(f"Les numéros de {self.site_name}"),
            language="fr", author_name=_xml_text(self.site_name),
        )
        for entry in newest_first[:FEED_ENTRIES]:
            issue = entry.issue
            url = f"{self.base_url}{issue.date.isoformat()}/"
            stamp = self._issue_time(issue)
            teasers = french_spacing(" ".join(f"— {t.theme} : {t.text}" for t in issue.menu))
            feed.add_item(
                title=_xml_text(f"{self.site_name} du {french_date(issue.date, year=True)}"), link=url,
                unique_id=url, pubdate=stamp, updateddate=stamp, text_link=f"{url}digest.txt",
                # Atom1Feed marks the summary as HTML: the plain-text teasers go in escaped.
                description=_xml_text(str(escape(teasers or "Rien de neuf ce matin sur nos sujets de veille."))),
                content=_xml_text(self._feed_content(issue)),
            )
        xml: str = feed.writeString("utf-8")
        return xml.encode("utf-8") + b"\n"

    @staticmethod
    def _issue_time(issue: Issue) -> dt.datetime:
        settings = issue.newsletter
        return dt.datetime.combine(issue.date, settings.issue_time, tzinfo=zoneinfo.ZoneInfo(settings.timezone))

    @staticmethod
    def _feed_content(issue: Issue) -> str:
        """The issue's menu and stories as an HTML fragment (escaped again by the XML writer)."""
        parts: list[str] = []
        if issue.menu:
            parts.append("<ul>" + "".join(f"<li>{escape(french_spacing(f'{t.theme} : {t.text}'))}</li>"
                                          for t in issue.menu) + "</ul>")
        stories = []
        for story in issue.stories():
            url = safe_url(story.url)
            text = escape(french_spacing(story.title))
            title = f'<a href="{escape(url)}">{text}</a>' if url else str(text)
            stories.append(f"<li>{title} ({escape(french_spacing(story.source))})</li>")
        if stories:
            parts.append("<ol>" + "".join(stories) + "</ol>")
        return "".join(parts) or "<p>Rien de neuf ce matin sur nos sujets de veille.</p>"

    # -- search

    def search_index(self, newest_first: Sequence[ArchiveEntry], topics: Sequence[TopicInfo]) -> str:
        """The static index search.html reads: one record per story, newest issue first.
        Only http(s) article URLs are kept; the page inserts every field as text."""
        themes = {t.id: t.theme for t in topics}
        stories: list[dict[str, object]] = []
        for entry in newest_first:
            label = french_date(entry.date, year=True)
            for story in entry.issue.stories():
                stories.append({
                    "date": entry.date.isoformat(), "date_label": label,
                    "issue": f"{entry.date.isoformat()}/index.html",
                    "kicker": story.kicker, "title": story.title, "text": story.text, "source": story.source,
                    "url": safe_url(story.url), "topics": [themes[t] for t in story.topics if t in themes],
                })
        return json.dumps({"version": 1, "stories": stories}, ensure_ascii=False, sort_keys=True,
                          separators=(",", ":")) + "\n"

    def search_page(self, topics: Sequence[TopicInfo]) -> str:
        script, script_hash = search_script(self.renderer.templates_dir)
        return self.renderer.render_page("search.html.j2", site_name=self.site_name, topics=topics,
                                         script=script, content_security_policy=content_security_policy(script_hash))


def search_script(templates_dir: Path) -> tuple[str, str]:
    """The search page's script (inlined into search.html) and its CSP hash ("sha256-…")."""
    script_path = templates_dir / SEARCH_SCRIPT
    try:
        script = script_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PipelineError(f"{script_path}: cannot read the search script: {exc.strerror or exc}") from None
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    return script, f"sha256-{digest}"


def content_security_policy(script_hash: str) -> str:
    """The site's Content-Security-Policy: nothing loaded from elsewhere, no script but the search
    page's own (by hash), inline styles (issue pages are email HTML: inlined CSS), images only
    from the site or data: URLs (the empty favicon), fetch only from the site (the search index).
    search.html carries it in a <meta>; `pipeline serve` sends it as a header on every page."""
    return (f"default-src 'none'; script-src '{script_hash}'; connect-src 'self'; style-src 'unsafe-inline'; "
            "img-src 'self' data:; base-uri 'none'; form-action 'self'")
