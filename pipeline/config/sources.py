"""Load and validate sources.yaml into a typed Config."""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
import zoneinfo
from dataclasses import fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pipeline.config.yamlfile import YamlMap, check_keys, expect_list, expect_map, load_yaml
from pipeline.errors import ConfigError
from pipeline.models import Config, FeedSource, FetchSettings, NewsletterSettings, ScheduleSettings

TOP_KEYS = {"newsletter", "fetch", "schedule", "storage", "feeds", "delivery"}
FEED_KEYS = {"id", "name", "url", "language", "weight", "enabled"}
STORAGE_KEYS = {"db", "output"}


def slugify(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")


def _typed(path: Path, section: YamlMap, key: str, want: type, where: str) -> Any:
    value = section[key]
    line = section.line_of(key)
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if want is tuple:
        if isinstance(value, str):
            return (value,)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(path, "must be a list of strings", line, f"{where}.{key}")
        return tuple(value)
    if want is dt.time:
        if isinstance(value, int):  # YAML 1.1 reads 06:00 as sexagesimal 360
            value = f"{value // 60:02d}:{value % 60:02d}"
        try:
            return dt.time.fromisoformat(str(value))
        except ValueError:
            raise ConfigError(path, f"must be a time HH:MM, got {value!r}", line, f"{where}.{key}") from None
    if (want is int and isinstance(value, bool)) or not isinstance(value, want):
        raise ConfigError(path, f"must be {want.__name__}, got {type(value).__name__}", line, f"{where}.{key}")
    if want in (int, float) and value < 0:
        raise ConfigError(path, "must not be negative", line, f"{where}.{key}")
    return value


def _settings(path: Path, raw: Any, cls: type, where: str, line: int) -> Any:
    """Build a settings dataclass from a mapping whose keys are the dataclass fields."""
    if raw is None:
        return cls()
    section = expect_map(path, raw, where, line)
    types = {f.name: f.type for f in fields(cls)}
    check_keys(path, section, set(types), where)
    kwargs: dict[str, Any] = {}
    for key in section:
        annotation = str(types[key])
        want: type
        if annotation.startswith("tuple"):
            want = tuple
        elif "dt.time" in annotation:
            want = dt.time
        elif annotation.startswith("float"):
            want = float
        elif annotation.startswith("int"):
            want = int
        else:
            want = str
        if section[key] is None and "None" in annotation:
            kwargs[key] = None
            continue
        kwargs[key] = _typed(path, section, key, want, where)
    return cls(**kwargs)


def _check_timezone(path: Path, name: str, line: int, key: str) -> None:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(path, f"unknown time zone {name!r}", line, key) from None


def resolve_feed_url(config_path: Path, url: str) -> str:
    """Resolve relative and file: URLs against the config file's folder."""
    parts = urlsplit(url)
    if parts.scheme in ("http", "https"):
        return url
    if parts.scheme == "file":
        local = Path(parts.path)
    elif parts.scheme == "":
        local = Path(url)
    else:
        raise ValueError(f"unsupported URL scheme {parts.scheme!r} (use http, https or file)")
    if not local.is_absolute():
        local = (config_path.parent / local).resolve()
    return local.as_uri()


def _feed(path: Path, raw: Any, index: int, line: int) -> FeedSource:
    where = f"feeds[{index}]"
    entry = expect_map(path, raw, where, line)
    check_keys(path, entry, FEED_KEYS, where)
    for required in ("name", "url"):
        if required not in entry or entry[required] in (None, ""):
            raise ConfigError(path, f"missing required key '{required}'", entry.line, where)
    name = _typed(path, entry, "name", str, where)
    url_text = _typed(path, entry, "url", str, where).strip()
    try:
        url = resolve_feed_url(path, url_text)
    except ValueError as exc:
        raise ConfigError(path, str(exc), entry.line_of("url"), f"{where}.url") from None
    if url.startswith("http") and not urlsplit(url).netloc:
        raise ConfigError(path, f"URL has no host: {url_text!r}", entry.line_of("url"), f"{where}.url")
    feed_id = _typed(path, entry, "id", str, where) if "id" in entry else slugify(name)
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", feed_id or ""):
        raise ConfigError(path, f"id must be lower-case letters, digits, - or _, got {feed_id!r}",
                          entry.line_of("id"), f"{where}.id")
    language = _typed(path, entry, "language", str, where) if "language" in entry else "fr"
    weight = _typed(path, entry, "weight", float, where) if "weight" in entry else 1.0
    enabled = entry.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(path, "must be true or false", entry.line_of("enabled"), f"{where}.enabled")
    return FeedSource(id=feed_id, name=name, url=url, language=language, weight=weight, enabled=enabled)


def load_config(path: Path) -> Config:
    """Read sources.yaml. Raises ConfigError naming file, line and key on any problem."""
    path = Path(path)
    raw = load_yaml(path)
    root = expect_map(path, raw, "", 1)
    check_keys(path, root, TOP_KEYS, "")
    newsletter = _settings(path, root.get("newsletter"), NewsletterSettings, "newsletter",
                           root.line_of("newsletter"))
    if "newsletter" in root and "timezone" in root["newsletter"]:
        _check_timezone(path, newsletter.timezone, root["newsletter"].line_of("timezone"), "newsletter.timezone")
    if not newsletter.base_url.endswith("/"):
        newsletter = NewsletterSettings(**{**newsletter.__dict__, "base_url": newsletter.base_url + "/"})
    if urlsplit(newsletter.base_url).scheme not in ("http", "https"):
        raise ConfigError(path, "must be an http(s) URL", root["newsletter"].line_of("base_url"),
                          "newsletter.base_url")
    fetch = _settings(path, root.get("fetch"), FetchSettings, "fetch", root.line_of("fetch"))
    for key in ("concurrency", "per_host", "max_tries"):
        if getattr(fetch, key) < 1:
            raise ConfigError(path, "must be at least 1", root["fetch"].line_of(key), f"fetch.{key}")
    schedule = _settings(path, root.get("schedule"), ScheduleSettings, "schedule", root.line_of("schedule"))
    if "schedule" in root and "timezone" in root["schedule"]:
        _check_timezone(path, schedule.timezone, root["schedule"].line_of("timezone"), "schedule.timezone")

    db_path = output_dir = None
    if "storage" in root:
        storage = expect_map(path, root["storage"], "storage", root.line_of("storage"))
        check_keys(path, storage, STORAGE_KEYS, "storage")
        if "db" in storage:
            db_path = path.parent / _typed(path, storage, "db", str, "storage")
        if "output" in storage:
            output_dir = path.parent / _typed(path, storage, "output", str, "storage")

    if "feeds" not in root:
        raise ConfigError(path, "missing required key 'feeds' (the list of feeds to read)", 1, "feeds")
    feed_list = expect_list(path, root["feeds"], "feeds", root.line_of("feeds"))
    if not feed_list:
        raise ConfigError(path, "no feeds configured", root.line_of("feeds"), "feeds")
    feeds: list[FeedSource] = []
    seen: dict[str, int] = {}
    for index, (entry, line) in enumerate(zip(feed_list, feed_list.item_lines, strict=True)):
        feed = _feed(path, entry, index, line)
        if feed.id in seen:
            raise ConfigError(path, f"duplicate feed id {feed.id!r} (first at feeds[{seen[feed.id]}])",
                              line, f"feeds[{index}].id")
        seen[feed.id] = index
        feeds.append(feed)
    return Config(path=path, newsletter=newsletter, fetch=fetch, schedule=schedule, feeds=tuple(feeds),
                  db_path=db_path, output_dir=output_dir)
