"""Load and validate sources.yaml into a typed Config."""

from __future__ import annotations

import datetime as dt
import math
import os
import re
import string
import unicodedata
import zoneinfo
from dataclasses import fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pipeline.config.yamlfile import YamlMap, check_keys, expect_list, expect_map, load_yaml
from pipeline.errors import ConfigError
from pipeline.models import (
    Config,
    DeliverySettings,
    FeedSource,
    FetchSettings,
    NewsletterSettings,
    ScheduleSettings,
    WorkerSettings,
)

TOP_KEYS = {"newsletter", "fetch", "schedule", "storage", "feeds", "delivery", "workers"}
FEED_KEYS = {"id", "name", "url", "language", "weight", "enabled"}
STORAGE_KEYS = {"db", "output", "backend"}
STORE_BACKENDS = ("sqlite", "postgresql")


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
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(path, f"must be a finite number, got {value!r}", line, f"{where}.{key}")
    if isinstance(value, int | float) and value < 0:
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


def _check_schedule(path: Path, schedule: ScheduleSettings, section: YamlMap) -> None:
    """A cron expression APScheduler would reject, or a zero interval, is named here with its line
    rather than when the scheduler starts."""
    from apscheduler.triggers.cron import CronTrigger  # only this check needs it

    if "cron" in section:
        try:
            CronTrigger.from_crontab(schedule.cron, timezone="UTC")
        except ValueError as exc:
            raise ConfigError(path, f"invalid cron expression {schedule.cron!r}: {exc}",
                              section.line_of("cron"), "schedule.cron") from None
    for key in ("misfire_grace_seconds", "watch_interval_seconds"):
        if key in section and getattr(schedule, key) < 1:
            raise ConfigError(path, "must be at least 1", section.line_of(key), f"schedule.{key}")


def _check_workers(path: Path, workers: WorkerSettings, section: YamlMap | None) -> None:
    def line(key: str) -> int:
        return section.line_of(key) if section is not None and key in section else 1

    for key in ("min_fetch_interval", "email_batch"):
        if getattr(workers, key) < 1:
            raise ConfigError(path, "must be at least 1", line(key), f"workers.{key}")
    if workers.max_fetch_interval < workers.min_fetch_interval:
        raise ConfigError(path, f"must be at least min_fetch_interval ({workers.min_fetch_interval})",
                          line("max_fetch_interval"), "workers.max_fetch_interval")
    if workers.heartbeat_seconds <= 0:
        raise ConfigError(path, "must be above 0", line("heartbeat_seconds"), "workers.heartbeat_seconds")
    if workers.tick_seconds < 1 or 60 % workers.tick_seconds:
        raise ConfigError(path, f"must divide 60 (1, 2, 5, 10, 15, 30 or 60), got {workers.tick_seconds}",
                          line("tick_seconds"), "workers.tick_seconds")
    if workers.stalled_after_seconds <= workers.heartbeat_seconds:
        raise ConfigError(path, f"must be above heartbeat_seconds ({workers.heartbeat_seconds:g})",
                          line("stalled_after_seconds"), "workers.stalled_after_seconds")


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
    if not url_text.isprintable():  # "\0" in a quoted YAML string: open() would fail on it at every run
        raise ConfigError(path, f"URL contains a control or invisible character: {url_text!r}",
                          entry.line_of("url"), f"{where}.url")
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


# ---------------------------------------------------------------- delivery (email)

DELIVERY_KEYS = {f.name for f in fields(DeliverySettings)}
ON_NO_APPROVAL = ("send_anyway", "hold")
DELIVERY_SECURITY = ("starttls", "tls", "none")
# Keys people reach for when they want to put a secret in the file: answer with where it belongs.
_SECRET_KEYS = {"user", "username", "login", "password", "passwd", "secret", "token", "smtp_user",
                "smtp_password", "smtp_username", "unsubscribe_secret"}
_ATEXT = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")
_DOMAIN_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
UNSUBSCRIBE_FIELDS = ("email", "token")
DEFAULT_RECIPIENTS = DeliverySettings(from_address="", unsubscribe_url="").recipients


def email_address_problem(address: str) -> str | None:
    """Why `address` is not a deliverable plain address (local@domain.tld), or None if it is.

    Deliberately stricter than RFC 5321: no quoted local parts, no IP literals and no
    non-ASCII (SMTPUTF8) addresses, which relays handle unevenly; a reader with such an
    address is told so when added rather than silently lost at send time."""
    if not address:
        return "empty address"
    if any(ch.isspace() for ch in address):
        return "contains white space"
    if not address.isascii():
        return "non-ASCII characters are not supported"
    if address.count("@") != 1:
        return "must contain exactly one @" if "@" in address else "missing @"
    local, domain = address.split("@")
    if not local:
        return "nothing before the @"
    if len(local) > 64:
        return "part before the @ is longer than 64 characters"
    if not all(_ATEXT.fullmatch(part) for part in local.split(".")):
        return f"invalid character or dot placement in {local!r}"
    if not domain:
        return "nothing after the @"
    if len(address) > 254:
        return "longer than 254 characters"
    labels = domain.split(".")
    if len(labels) < 2:
        return f"domain {domain!r} has no dot"
    if not all(_DOMAIN_LABEL.fullmatch(label) for label in labels):
        return f"invalid domain {domain!r}"
    if labels[-1].isdigit():
        return f"invalid domain {domain!r}"
    return None


# Unicode categories a display name must not hold: controls (CR, LF, NUL, U+0085…), line and
# paragraph separators, invisible formatting characters (bidi overrides, zero-width) and lone
# surrogates. In a header, a line break would start a header of its own ("Bcc: …").
_NAME_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
MAX_NAME_LENGTH = 200


def display_name_problem(name: str) -> str | None:
    """Why `name` cannot be the display name of an address header (To, From), or None if it can."""
    for ch in name:
        if unicodedata.category(ch) in _NAME_REFUSED_CATEGORIES:
            return f"contains a control, line-break or invisible character (U+{ord(ch):04X})"
    if "=?" in name:  # an RFC 2047 encoded word: mail software decodes it, line breaks and all
        return "contains '=?' (mail software would decode it as an encoded word)"
    if len(name) > MAX_NAME_LENGTH:
        return f"longer than {MAX_NAME_LENGTH} characters"
    return None


def _template_problem(template: str) -> str | None:
    """A placeholder other than {email} / {token}, or a malformed brace, in a URL template."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        return f"bad template: {exc}"
    unknown = [n for n in names if n not in UNSUBSCRIBE_FIELDS]
    if unknown:
        return f"unknown placeholder {{{unknown[0]}}} (use {{email}} or {{token}})"
    return None


def _delivery(path: Path, raw: Any, line: int) -> DeliverySettings:
    where = "delivery"
    section = expect_map(path, raw, where, line)
    for key in section:
        if key.lower() in _SECRET_KEYS:
            raise ConfigError(path, "credentials are never read from sources.yaml: put them in the environment "
                              "variables named by delivery.username_env / delivery.password_env "
                              "(default TECH_MATIN_SMTP_USER / TECH_MATIN_SMTP_PASSWORD)",
                              section.line_of(key), f"{where}.{key}")
    check_keys(path, section, DELIVERY_KEYS, where)
    for required in ("from_address", "unsubscribe_url"):
        if section.get(required) in (None, ""):
            raise ConfigError(path, f"missing required key '{required}'", section.line, where)

    def text(key: str) -> str:
        return str(_typed(path, section, key, str, where)).strip()

    def fail(key: str, message: str) -> ConfigError:
        return ConfigError(path, message, section.line_of(key), f"{where}.{key}")

    values: dict[str, Any] = {}
    for key in ("from_address", "reply_to"):
        if section.get(key) is None:
            continue
        address = text(key)
        problem = email_address_problem(address)
        if problem:
            raise fail(key, f"bad address {address!r}: {problem}")
        values[key] = address
    for key in ("from_name", "smtp_host", "username_env", "password_env", "unsubscribe_secret_env"):
        if key in section:
            values[key] = text(key)
    if "from_name" in values:
        problem = display_name_problem(values["from_name"])
        if problem:
            raise fail("from_name", f"bad name {values['from_name']!r}: {problem}")
    if "smtp_host" in values and not values["smtp_host"]:
        raise fail("smtp_host", "must not be empty")
    for key in ("username_env", "password_env", "unsubscribe_secret_env"):
        if key in values and not _ENV_NAME.fullmatch(values[key]):
            raise fail(key, f"must be the NAME of an environment variable, got {values[key]!r}")
    if "security" in section:
        security = text("security").lower()
        if security not in DELIVERY_SECURITY:
            raise fail("security", f"must be one of {', '.join(DELIVERY_SECURITY)}, got {security!r}")
        values["security"] = security
    if section.get("smtp_port") is not None:
        port = _typed(path, section, "smtp_port", int, where)
        if not 1 <= port <= 65535:
            raise fail("smtp_port", f"must be a port number 1-65535, got {port}")
        values["smtp_port"] = port
    url = text("unsubscribe_url")
    if urlsplit(url).scheme != "https" or not urlsplit(url.replace("{", "").replace("}", "")).netloc:
        raise fail("unsubscribe_url", f"must be an https URL (RFC 8058 one-click unsubscribe), got {url!r}")
    values["unsubscribe_url"] = url
    if section.get("unsubscribe_mailto"):
        mailto = text("unsubscribe_mailto")
        if not mailto.lower().startswith("mailto:") or "@" not in mailto:
            raise fail("unsubscribe_mailto", f"must be a mailto: address, got {mailto!r}")
        values["unsubscribe_mailto"] = mailto
    for key in ("unsubscribe_url", "unsubscribe_mailto"):
        problem = _template_problem(values.get(key, ""))
        if problem:
            raise fail(key, problem)
    if "{token}" not in url:
        # Without the signed token, the link only names the address: anyone could unsubscribe anyone.
        raise fail("unsubscribe_url", f"must contain {{token}} (the reader's signed unsubscribe token), got {url!r}")
    if "recipients" in section:
        name = text("recipients")
        if not name:
            raise fail("recipients", "must be a file name")
        values["recipients"] = path.parent / name
    else:
        values["recipients"] = path.parent / DEFAULT_RECIPIENTS
    if Path(values["recipients"]).suffix.lower() not in (".csv", ".yaml", ".yml"):
        raise fail("recipients", "must be a .csv or .yaml file")
    if section.get("tls_ca_file") is not None:
        ca_file = path.parent / text("tls_ca_file")
        if not ca_file.is_file():
            raise fail("tls_ca_file", f"file not found: {ca_file}")
        values["tls_ca_file"] = ca_file
    for key in ("timeout", "rate", "retry_delay"):
        if key in section:
            values[key] = _typed(path, section, key, float, where)
    if values.get("timeout", 1.0) <= 0:
        raise fail("timeout", "must be more than 0 seconds")
    if "max_retries" in section:
        values["max_retries"] = _typed(path, section, "max_retries", int, where)
    for key in ("suppress_bounces", "send_empty", "require_approval"):
        if key in section:
            if not isinstance(section[key], bool):
                raise fail(key, "must be true or false")
            values[key] = section[key]
    for key in ("draft_time", "approve_by"):
        if section.get(key) is not None:
            values[key] = _typed(path, section, key, dt.time, where)
    if "on_no_approval" in section:
        choice = text("on_no_approval").lower()
        if choice not in ON_NO_APPROVAL:
            raise fail("on_no_approval", f"must be one of {', '.join(ON_NO_APPROVAL)}, got {choice!r}")
        values["on_no_approval"] = choice
    if values.get("require_approval"):
        if values.get("approve_by") is None:
            raise ConfigError(path, "require_approval is true: set approve_by (HH:MM, local time), the time "
                              "after which on_no_approval applies", section.line_of("require_approval"),
                              f"{where}.approve_by")
        draft_time = values.get("draft_time")
        if draft_time is not None and values["approve_by"] <= draft_time:
            raise fail("approve_by", f"must be after draft_time ({draft_time:%H:%M}), got "
                                     f"{values['approve_by']:%H:%M}")
    return DeliverySettings(**values)


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
    name_problem = display_name_problem(newsletter.name)  # the From name when delivery.from_name is not set
    if name_problem:
        section = root.get("newsletter")
        raise ConfigError(path, f"bad name {newsletter.name!r}: {name_problem}",
                          section.line_of("name") if isinstance(section, YamlMap) else 1, "newsletter.name")
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
    if "schedule" in root:
        _check_schedule(path, schedule, root["schedule"])

    db_path = output_dir = None
    store_backend = "sqlite"
    if "storage" in root:
        storage = expect_map(path, root["storage"], "storage", root.line_of("storage"))
        check_keys(path, storage, STORAGE_KEYS, "storage")
        if "backend" in storage:
            store_backend = _typed(path, storage, "backend", str, "storage")
            if store_backend not in STORE_BACKENDS:
                raise ConfigError(path, f"must be one of {', '.join(STORE_BACKENDS)}, got {store_backend!r} "
                                  "(the PostgreSQL address goes in $TECH_MATIN_DATABASE_URL, never here)",
                                  storage.line_of("backend"), "storage.backend")
        if "db" in storage:
            db_path = Path(os.path.normpath(path.parent / _typed(path, storage, "db", str, "storage")))
        if "output" in storage:
            output_dir = Path(os.path.normpath(path.parent / _typed(path, storage, "output", str, "storage")))

    workers = _settings(path, root.get("workers"), WorkerSettings, "workers", root.line_of("workers"))
    _check_workers(path, workers, root.get("workers"))

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
    delivery = _delivery(path, root["delivery"], root.line_of("delivery")) if "delivery" in root else None
    return Config(path=path, newsletter=newsletter, fetch=fetch, schedule=schedule, feeds=tuple(feeds),
                  db_path=db_path, output_dir=output_dir, delivery=delivery,
                  store_backend=store_backend, workers=workers)
