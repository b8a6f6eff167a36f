"""The recipients file: readers (CSV `email,name,topics` or a YAML list), read and validated
with errors naming file and line, and edited atomically under a lock; who wants which issue."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.archive import atomic_write
from pipeline.config.sources import display_name_problem, email_address_problem
from pipeline.config.yamlfile import YamlList, YamlMap, load_yaml
from pipeline.errors import ConfigError, PipelineError
from pipeline.lock import exclusive
from pipeline.models import Issue

RECIPIENT_FIELDS = ("email", "name", "topics")


@dataclass(frozen=True)
class Recipient:
    email: str  # as written in the file
    name: str = ""
    topics: tuple[str, ...] = ()  # topics of interest; empty: every issue
    line: int = 0  # line in the recipients file, for error messages

    @property
    def key(self) -> str:
        """The address as the store knows it: domains are case-insensitive, and no real
        mailbox tells Jeanne@ from jeanne@, so one reader is one lower-cased address."""
        return self.email.lower()


def _split_topics(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    words = [str(v).strip() for v in value] if isinstance(value, list) else re.split(r"[\s;,]+", str(value))
    return tuple(w for w in words if w)


def _check_recipient(path: Path, recipient: Recipient, seen: dict[str, int],
                     known_topics: Sequence[str] | None) -> None:
    problem = email_address_problem(recipient.email)
    if problem:
        raise ConfigError(path, f"bad address {recipient.email!r}: {problem}", recipient.line, "email")
    problem = display_name_problem(recipient.name)
    if problem:
        raise ConfigError(path, f"bad name {recipient.name!r}: {problem}", recipient.line, "name")
    if recipient.key in seen:
        raise ConfigError(path, f"duplicate address {recipient.email!r} (first at line {seen[recipient.key]})",
                          recipient.line, "email")
    seen[recipient.key] = recipient.line
    if known_topics is not None:
        for topic in recipient.topics:
            if topic not in known_topics:
                raise ConfigError(path, f"unknown topic {topic!r} (known: {', '.join(known_topics)})",
                                  recipient.line, "topics")


def reader_problem(email: str, name: str) -> str | None:
    """Why a reader's address or name cannot go into a message header (one line), or None."""
    problem = email_address_problem(email)
    if problem:
        return f"bad address {email!r}: {problem}"
    problem = display_name_problem(name)
    if problem:
        return f"bad name {name!r}: {problem}"
    return None


def _read_csv(path: Path, text: str) -> list[Recipient]:
    reader = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    recipients: list[Recipient] = []
    end = 0
    for row in reader:
        # A quoted cell may span lines: a row is named by the line it starts on.
        line, end = end + 1, reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if header is None:
            header = [cell.strip().lower() for cell in row]
            unknown = [h for h in header if h not in RECIPIENT_FIELDS]
            if "email" not in header or unknown:
                raise ConfigError(path, f"the first line must be the header {','.join(RECIPIENT_FIELDS)} "
                                  f"(got {','.join(row)!r})", line)
            continue
        if len(row) > len(header):
            raise ConfigError(path, f"{len(row)} columns, the header has {len(header)} "
                              "(quote a name that contains a comma)", line)
        values = dict(zip(header, [cell.strip() for cell in row], strict=False))
        recipients.append(Recipient(email=values.get("email", ""), name=values.get("name", ""),
                                    topics=_split_topics(values.get("topics")), line=line))
    return recipients


def _read_yaml(path: Path) -> list[Recipient]:
    data = load_yaml(path)
    if not isinstance(data, YamlList):
        raise ConfigError(path, "must be a list of {email, name, topics}", getattr(data, "line", 1))
    recipients: list[Recipient] = []
    for index, (entry, line) in enumerate(zip(data, data.item_lines, strict=True)):
        where = f"[{index}]"
        if isinstance(entry, str):  # a bare address is a reader without name nor topics
            recipients.append(Recipient(email=entry.strip(), line=line))
            continue
        if not isinstance(entry, YamlMap):
            raise ConfigError(path, f"must be a mapping with an email, got {type(entry).__name__}", line, where)
        unknown = [k for k in entry if k not in RECIPIENT_FIELDS]
        if unknown:
            raise ConfigError(path, f"unknown key (expected one of: {', '.join(RECIPIENT_FIELDS)})",
                              entry.line_of(unknown[0]), f"{where}.{unknown[0]}")
        if not isinstance(entry.get("email"), str):
            raise ConfigError(path, "missing email", entry.line, f"{where}.email")
        topics = entry.get("topics")
        if topics is not None and not isinstance(topics, str | list):
            raise ConfigError(path, "must be a list of topic ids", entry.line_of("topics"), f"{where}.topics")
        recipients.append(Recipient(email=entry["email"].strip(), name=str(entry.get("name") or "").strip(),
                                    topics=_split_topics(topics), line=entry.line_of("email")))
    return recipients


def load_recipients(path: Path, known_topics: Sequence[str] | None = None) -> list[Recipient]:
    """Read and validate a recipients file: CSV with header `email,name,topics`, or a YAML list
    of {email, name, topics}. Errors name the file, the line and the reason."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: recipients file not found; add a reader with "
                            "`pipeline subscribers add EMAIL`")
    if path.suffix.lower() in (".yaml", ".yml"):
        if not path.read_bytes().strip():
            return []
        recipients = _read_yaml(path)
    else:
        try:
            text = path.read_text(encoding="utf-8-sig")  # -sig: spreadsheets write a BOM
        except UnicodeDecodeError as exc:
            raise ConfigError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        recipients = _read_csv(path, text)
    seen: dict[str, int] = {}
    for recipient in recipients:
        _check_recipient(path, recipient, seen, known_topics)
    return recipients


def _recipients_bytes(path: Path, recipients: Sequence[Recipient]) -> bytes:
    if path.suffix.lower() in (".yaml", ".yml"):
        rows: list[dict[str, Any]] = []
        for r in recipients:
            row: dict[str, Any] = {"email": r.email}
            if r.name:
                row["name"] = r.name
            if r.topics:
                row["topics"] = list(r.topics)
            rows.append(row)
        return yaml.safe_dump(rows, allow_unicode=True, sort_keys=False).encode("utf-8")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(RECIPIENT_FIELDS)
    for r in recipients:
        writer.writerow([r.email, r.name, " ".join(r.topics)])
    return buffer.getvalue().encode("utf-8")


def add_recipient(path: Path, email: str, name: str = "", topics: Sequence[str] = (),
                  known_topics: Sequence[str] | None = None) -> Recipient:
    """Append a reader to the recipients file (created if missing), atomically."""
    path = Path(path)
    with exclusive(path.with_name(path.name + ".lock"), "another edit of the recipients file"):
        current = load_recipients(path) if path.exists() else []
        recipient = Recipient(email=email.strip(), name=name.strip(), topics=tuple(topics),
                              line=(max((r.line for r in current), default=1) + 1))
        problem = reader_problem(recipient.email, recipient.name)
        if problem:
            raise PipelineError(problem)
        if any(r.key == recipient.key for r in current):
            raise PipelineError(f"{recipient.email} is already in {path}")
        for topic in recipient.topics:
            if known_topics is not None and topic not in known_topics:
                raise PipelineError(f"unknown topic {topic!r} (known: {', '.join(known_topics)})")
        atomic_write(path, _recipients_bytes(path, [*current, recipient]))
    return recipient


def remove_recipient(path: Path, email: str) -> Recipient:
    """Take a reader out of the recipients file, atomically."""
    path = Path(path)
    with exclusive(path.with_name(path.name + ".lock"), "another edit of the recipients file"):
        current = load_recipients(path)
        key = email.strip().lower()
        found = [r for r in current if r.key == key]
        if not found:
            raise PipelineError(f"{email} is not in {path}")
        atomic_write(path, _recipients_bytes(path, [r for r in current if r.key != key]))
    return found[0]


def issue_topics(issue: Issue) -> set[str]:
    """Every topic of every story of the issue (lead, sections, further reading)."""
    return {topic for story in issue.stories() for topic in story.topics}


def wants_issue(recipient: Recipient, topics: Set[str]) -> bool:
    """The rule for topics of interest: a reader without topics gets every issue; a reader with
    topics gets an issue when at least one story carries one of them (the whole issue is sent,
    not only those stories)."""
    return not recipient.topics or not topics.isdisjoint(recipient.topics)
