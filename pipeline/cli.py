"""The `pipeline` command: parses arguments, calls the pipeline (`pipeline.app`), prints summaries.

No pipeline logic lives here. Bad input ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TextIO

from pipeline import __version__
from pipeline.errors import PipelineError

if TYPE_CHECKING:
    from pipeline.app import DeliveryEvent, DraftView, FeedStatus, IssueDeletion, Pipeline, RunReport

EXIT_OK = 0
EXIT_FAILED = 1  # the job ran but could not do its work (no feed readable, …)
EXIT_USAGE = 2  # bad input: arguments, configuration, rules


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump), as the command-line contract asks."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


# ---------------------------------------------------------------- argument types
# Every date and number of the command line is checked here, at parsing, so that a value the
# pipeline cannot use ends with one line and exit 2 rather than a traceback deep inside.

# Issue dates the pipeline can compute with: a window starts the day before, the agenda looks a
# year either side, and the SQLite archive, the Atom feed and the site all want a 4-digit year.
MIN_DATE = dt.date(1970, 1, 1)
MAX_DATE = dt.date(9998, 12, 31)
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _date(text: str) -> dt.date:
    try:
        if not _ISO_DATE.fullmatch(text):  # fromisoformat alone also takes 20250506 and 2025-W19-2
            raise ValueError(text)
        value = dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid date {text!r}: expected YYYY-MM-DD") from None
    if not MIN_DATE <= value <= MAX_DATE:
        raise argparse.ArgumentTypeError(f"date {text} is out of range ({MIN_DATE} to {MAX_DATE})")
    return value


def _whole_number(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from `low` to `high`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:  # also a number of more than 4,300 digits
            raise argparse.ArgumentTypeError(f"invalid number {text[:40]!r}: expected a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}, got {text[:40]}")
        return value

    return parse


# A port to listen on; 0 asks the system for any free port.
port_number = _whole_number(0, 65535)
_concurrency = _whole_number(1, 64)  # jobs at once in one `pipeline worker` process
MAX_SEARCH_RESULTS = 10_000
MAX_LOCK_WAIT = 86_400.0  # a day: waiting longer for another build of a daily issue makes no sense


def _add_common(parser: argparse.ArgumentParser, db: bool = True, output: bool = True) -> None:
    parser.add_argument("--config", type=Path, default=Path("sources.yaml"),
                        help="feeds and newsletter settings (default: sources.yaml)")
    parser.add_argument("--topics", type=Path, default=None,
                        help="topic rules (default: topics.yaml here, else beside the config file)")
    if db:
        parser.add_argument("--db", type=Path, default=None,
                            help="SQLite archive (default: storage.db of the config, else data/pipeline.sqlite3)")
    if output:
        parser.add_argument("--output", type=Path, default=None,
                            help="site folder (default: storage.output of the config, else output)")
    parser.add_argument("--templates", type=Path, default=None, help=argparse.SUPPRESS)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of seconds {text[:40]!r}") from None
    if not value >= 0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"must not be negative, got {text[:40]!r}")
    if not value <= MAX_LOCK_WAIT:  # also rejects inf
        raise argparse.ArgumentTypeError(f"must be at most {MAX_LOCK_WAIT:g} seconds, got {text[:40]!r}")
    return value


def _add_force(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true",
                        help="build a --date more than a day ahead of today (refused otherwise: a future "
                             "issue would top the archive)")


def _refuse_far_future(date: dt.date | None, timezone: str, force: bool) -> None:
    """A date typed wrong (2205 for 2025) must not become the newest issue of the archive."""
    from pipeline.app import today_in

    today = today_in(timezone)
    if date is not None and not force and date > today + dt.timedelta(days=1):
        raise PipelineError(f"--date {date.isoformat()} is more than a day ahead of today ({today.isoformat()} in "
                            f"{timezone}); check the date, or add --force to build it anyway")


def _add_lock_timeout(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lock-timeout", type=_seconds, default=None, metavar="SECONDS",
                        help="wait at most this long for another build of the same archive, then exit 1 "
                             "(default: schedule.lock_timeout_seconds, else 60)")


def _add_common_after(parser: argparse.ArgumentParser) -> None:
    """The common options again on a sub-action (`pipeline archive list --db D`), defaulting to
    SUPPRESS so that they never overwrite the same options given before the action."""
    parser.add_argument("--config", type=Path, default=argparse.SUPPRESS,
                        help="feeds and settings (default: sources.yaml)")
    parser.add_argument("--topics", type=Path, default=argparse.SUPPRESS, help="topic rules (default: topics.yaml)")
    parser.add_argument("--db", type=Path, default=argparse.SUPPRESS,
                        help="SQLite archive (default: storage.db of the config, else data/pipeline.sqlite3)")
    parser.add_argument("--output", type=Path, default=argparse.SUPPRESS,
                        help="site folder, for the published text (default: storage.output, else output)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pipeline", description="Tech Matin: a regulatory newsletter built from feeds.")
    parser.add_argument("--version", action="version", version=f"pipeline {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = commands.add_parser("run", help="fetch, classify, compose, render and archive one issue")
    _add_common(run)
    run.add_argument("--date", type=_date, help="issue date YYYY-MM-DD (default: today in the newsletter's zone)")
    run.add_argument("--retry-failed", action="store_true",
                     help="re-enable feeds skipped after too many consecutive failures")
    run.add_argument("--skip-empty", action="store_true", help="write nothing when no item matches")
    _add_lock_timeout(run)
    _add_force(run)

    rebuild = commands.add_parser("rebuild", help="re-render issues from the store, with no network")
    _add_common(rebuild)
    which = rebuild.add_mutually_exclusive_group(required=True)
    which.add_argument("--date", type=_date, help="the issue to rebuild, YYYY-MM-DD")
    which.add_argument("--all", action="store_true", help="rebuild every stored issue")
    _add_lock_timeout(rebuild)
    _add_force(rebuild)

    schedule = commands.add_parser("schedule", help="build the issue every morning (cron, catch-up, retries)")
    _add_common(schedule)
    schedule.add_argument("--cron", default=None,
                          help='when to build, 5 crontab fields (default: schedule.cron, else "0 6 * * *")')
    schedule.add_argument("--timezone", default=None,
                          help="time zone of --cron and of the issue date (default: schedule.timezone, "
                               "else Europe/Paris)")
    schedule.add_argument("--log-file", type=Path, default=None,
                          help="also append the scheduler's log to this file (default: schedule.log_file)")
    schedule.add_argument("--once", action="store_true",
                          help="check once and exit: build today's issue if it is due and not built "
                               "(for cron; see deploy/crontab)")
    _add_lock_timeout(schedule)

    classify = commands.add_parser("classify", help="classify JSONL items (stdin with -)")
    classify.add_argument("file", nargs="?", default="-", help="JSONL file, or - for standard input")
    classify.add_argument("--topics", type=Path, default=None, help="topic rules (default: topics.yaml)")
    classify.add_argument("--config", type=Path, default=Path("sources.yaml"), help=argparse.SUPPRESS)

    evaluate = commands.add_parser("evaluate", help="precision, recall and F1 of the rules on labelled JSONL")
    evaluate.add_argument("files", type=Path, nargs="+", metavar="FILE",
                          help="labelled JSONL (a `labels` list per item); several files give a table each and "
                               "the total")
    evaluate.add_argument("--topics", type=Path, default=None, help="topic rules (default: topics.yaml)")
    evaluate.add_argument("--config", type=Path, default=Path("sources.yaml"), help=argparse.SUPPRESS)

    suggest = commands.add_parser(
        "suggest-rules", help="propose terms that separate the labelled items the rules miss (writes nothing)")
    suggest.add_argument("file", type=Path, help="labelled JSONL (a `labels` list per item)")
    suggest.add_argument("--topic", help="only this topic (default: every topic)")
    suggest.add_argument("--limit", type=int, default=12, choices=range(1, 101), metavar="N",
                         help="candidate terms per topic (1-100, default 12)")
    _add_common(suggest, output=False)

    try_rules = commands.add_parser(
        "try-rules", help="try a changed topics.yaml on stored items: which would gain or lose a topic")
    try_rules.add_argument("candidate", type=Path, help="the candidate rules file (e.g. a copy of topics.yaml)")
    _add_common(try_rules, output=False)
    try_rules.add_argument("--since", type=_date, help="only items of this date or later (YYYY-MM-DD)")
    try_rules.add_argument("--until", type=_date, help="only items of this date or earlier (YYYY-MM-DD)")

    check = commands.add_parser("check", help="validate the config and the rules, print a summary")
    _add_common(check, db=False, output=False)

    archive = commands.add_parser("archive", help="browse stored issues in the terminal")
    _add_common(archive, output=False)
    archive_commands = archive.add_subparsers(dest="archive_command", metavar="ACTION", parser_class=_Parser)
    archive_commands.required = True
    archive_list = archive_commands.add_parser("list", help="every stored issue, newest first")
    show = archive_commands.add_parser("show", help="print one issue's plain text")
    show.add_argument("date", type=_date)
    search = archive_commands.add_parser(
        "search", help="full-text search over stored stories, best first (accents and case ignored)")
    search.add_argument("query", nargs="+",
                        help='words that must all appear; "quoted words" as a phrase; word* as a prefix')
    search.add_argument("--limit", type=_whole_number(1, MAX_SEARCH_RESULTS), default=20,
                        help=f"results shown, 1 to {MAX_SEARCH_RESULTS} (default: 20)")
    search.add_argument("--topic", default=None, help="only stories of this topic id")
    delete = archive_commands.add_parser(
        "delete", help="remove an issue from the store and the site (index, feed, search, its neighbours' links) "
                       "and give its stories back to other dates; says what it would do unless --yes")
    delete.add_argument("date", type=_date)
    delete.add_argument("--yes", action="store_true", help="delete (without it, nothing is changed)")
    _add_lock_timeout(delete)
    for action in (archive_list, show, search, delete):
        _add_common_after(action)

    feeds = commands.add_parser("feeds", help="feeds' health; re-enable or disable feeds")
    _add_common(feeds, output=False)
    feed_commands = feeds.add_subparsers(dest="feeds_command", metavar="ACTION", parser_class=_Parser)
    feed_commands.required = True
    feeds_list = feed_commands.add_parser("list", help="status, errors and failures of every configured feed")
    enable = feed_commands.add_parser("enable", help="reset failures so a skipped feed is read again")
    enable.add_argument("ids", nargs="*", help="feed ids (default: all)")
    disable = feed_commands.add_parser("disable", help="stop reading feeds until enabled again")
    disable.add_argument("ids", nargs="+", help="feed ids")
    for action in (feeds_list, enable, disable):
        _add_common_after(action)

    serve = commands.add_parser("serve", help="serve the archive site locally")
    _add_common(serve, db=False)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    serve.add_argument("--port", type=port_number, default=8000, help="port, 0 for any free one (default: 8000)")

    desk = commands.add_parser("desk", help="the editor's desk (review, approve) and readers' one-click "
                                            "unsubscribe, a small web app")
    _add_common(desk)
    desk.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1; put a TLS "
                                                          "reverse proxy in front, see deploy/)")
    desk.add_argument("--port", type=port_number, default=8001, help="port, 0 for any free one (default: 8001)")

    send = commands.add_parser("send", help="email a built issue to every reader, exactly once (resumable)")
    _add_common(send, output=False)
    send.add_argument("--date", type=_date, help="issue date YYYY-MM-DD (default: today in the newsletter's zone)")
    send.add_argument("--dry-run", action="store_true",
                      help="write one .eml per reader to the outbox instead of sending; record nothing")
    send.add_argument("--outbox", type=Path, default=None,
                      help="folder of --dry-run messages (default: outbox/ beside the database)")
    send.add_argument("--resend-uncertain", action="store_true",
                      help="also resend readers whose earlier send broke after the message was handed over "
                           "(check the mail server's log for their Message-ID first)")
    send.add_argument("--confirm-delivered", action="append", default=[], metavar="MESSAGE-ID",
                      help="an uncertain delivery that the mail server's log shows it accepted: recorded as sent, "
                           "never mailed again (repeatable)")
    send.add_argument("--confirm-lost", action="append", default=[], metavar="MESSAGE-ID",
                      help="an uncertain delivery that the mail server's log does not have: recorded as lost and "
                           "mailed again once by this send, same Message-ID (repeatable)")

    worker = commands.add_parser(
        "worker", help="run procrastinate workers on the PostgreSQL store (storage.backend: postgresql)")
    _add_common(worker)
    worker.add_argument("--queues", default=None,
                        help="comma-separated queues to take jobs from (default: feeds,build,email,maintenance)")
    worker.add_argument("--concurrency", type=_concurrency, default=1,
                        help="jobs run at once by this process, 1-64 (default: 1)")
    worker.add_argument("--name", default="worker", help="this worker's name in the logs (default: worker)")

    subscribers = commands.add_parser("subscribers", help="list, add or remove email readers")
    _add_common(subscribers, output=False)
    subscriber_commands = subscribers.add_subparsers(dest="subscribers_command", metavar="ACTION",
                                                     parser_class=_Parser)
    subscriber_commands.required = True
    subscribers_list = subscriber_commands.add_parser(
        "list", help="every reader of the recipients file, and suppressed addresses")
    add = subscriber_commands.add_parser("add", help="add a reader (lifts a suppression of that address)")
    add.add_argument("email")
    add.add_argument("--name", default="", help="the reader's name (in the To header)")
    # Not --topics: every command already has --topics for the rules file.
    add.add_argument("--interests", default="", metavar="TOPIC,…",
                     help="topic ids of interest, comma-separated (default: every issue)")
    remove = subscriber_commands.add_parser("remove", help="remove a reader and suppress the address")
    remove.add_argument("email")
    for action in (subscribers_list, add, remove):
        _add_common_after(action)
    _add_editorial_commands(commands)
    _describe_commands(parser)
    return parser


def _add_editorial_commands(commands: argparse._SubParsersAction[_Parser]) -> None:
    """The editor's review from the terminal (the desk offers the same in a browser)."""
    draft = commands.add_parser("draft", help="show an issue as it stands: stories, topics, matched words, "
                                              "decisions, approval")
    decide = commands.add_parser("decide", help="record an editorial decision on an issue and build it again")
    decide.add_argument("action", choices=("drop", "lead", "move", "kicker", "summary", "add"),
                        help="drop a story, make it the lead, move it to --section, replace its kicker or "
                             "summary with --text, or add an item the rules left out")
    decide.add_argument("item", help="the item id of the story (as `pipeline draft` or `pipeline candidates` show)")
    decide.add_argument("--section", default=None, help="move (and add): the topic id of the target section")
    decide.add_argument("--text", default=None, help="kicker, summary: the new text")
    candidates = commands.add_parser("candidates", help="stored items of an issue's window that the rules left "
                                                        "out, newest first (searchable)")
    candidates.add_argument("query", nargs="*", help='words that must all appear; "a phrase"; word* as a prefix')
    candidates.add_argument("--limit", type=_whole_number(1, MAX_SEARCH_RESULTS), default=20,
                            help=f"items shown, 1 to {MAX_SEARCH_RESULTS} (default: 20)")
    approve = commands.add_parser("approve", help="approve an issue as it stands (delivery.require_approval)")
    send_test = commands.add_parser("send-test", help="email an issue to one address only (the editor's), "
                                                      "recording no delivery")
    send_test.add_argument("--to", required=True, metavar="ADDRESS", help="the one address to send it to")
    for command in (draft, decide, candidates, approve, send_test):
        _add_common(command)
        command.add_argument("--date", type=_date, help="issue date YYYY-MM-DD (default: today in the "
                                                        "newsletter's zone)")
    for command in (decide, approve):
        command.add_argument("--editor", required=True, help="who decides (kept with the decision)")
        _add_lock_timeout(command)


def subcommands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
                ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser, str | None]]:
    """(path, parser, help line) of every sub-command and sub-action, e.g. (("archive", "list"), …).
    argparse keeps them in private attributes: this is the one place that reads them."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, command in action.choices.items():
                yield (*prefix, name), command, helps.get(name)
                yield from subcommands(command, (*prefix, name))


def _describe_commands(parser: argparse.ArgumentParser) -> None:
    """Each sub-command's own --help opens with the line that its parent's --help gives it."""
    for _, command, line in subcommands(parser):
        if command.description is None:
            command.description = line


# ---------------------------------------------------------------- resolution of paths


def _topics_path(args: argparse.Namespace) -> Path:
    if args.topics is not None:
        return Path(args.topics)
    here = Path("topics.yaml")
    if here.is_file():
        return here
    beside = Path(args.config).parent / "topics.yaml"
    return beside if beside.is_file() else here


def _pipeline(args: argparse.Namespace) -> Pipeline:
    """The pipeline of the archive the arguments name (config, rules, store, output folder)."""
    from pipeline.app import Pipeline

    return Pipeline.from_files(Path(args.config), _topics_path(args), db=getattr(args, "db", None),
                               output=getattr(args, "output", None), templates=getattr(args, "templates", None))


# ---------------------------------------------------------------- commands


def _print_fetch_report(report: RunReport, config_path: Path, out: TextIO, err: TextIO) -> None:
    from rich.console import Console

    from pipeline.fetchreport import render_fetch_table

    table_console = Console(file=out, width=110 if not getattr(out, "isatty", lambda: False)() else None)
    render_fetch_table([f.fetch for f in report.feeds if f.fetch], {f.feed_id: f.new_items for f in report.feeds},
                       table_console)
    for feed in report.feeds:
        if feed.status == "failed":
            print(f"warning: feed {feed.feed_id} ({feed.name}): {feed.error}", file=err)
        elif feed.moved_to:
            print(f"notice: feed {feed.feed_id} moved permanently to {feed.moved_to}; update {config_path}",
                  file=err)
        for warning in feed.warnings:
            print(f"notice: feed {feed.feed_id}: {warning}", file=err)


def _cmd_run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from pipeline.app import RunReport
    from pipeline.errors import RunFailed
    from pipeline.fetchreport import FetchProgress, load_table, progress_console

    with _pipeline(args) as app:
        _refuse_far_future(args.date, app.config.newsletter.timezone, args.force)
        try:
            with FetchProgress(len(app.config.feeds), progress_console(err)) as progress:
                report = app.run(args.date, retry_failed=args.retry_failed, skip_empty=args.skip_empty,
                                 on_result=progress.advance, lock_timeout=args.lock_timeout, while_waiting=load_table)
        except RunFailed as exc:
            # No feed readable: the per-feed reasons are what the user needs to fix it.
            if isinstance(exc.report, RunReport):
                _print_fetch_report(exc.report, app.config.path, out, err)
            raise
        _print_fetch_report(report, app.config.path, out, err)
    print(report.summary(), file=out)
    if report.build and not report.build.skipped:
        print(f"open {(report.build.issue_dir / 'index.html').resolve()}", file=out)
    return EXIT_OK


def _cmd_rebuild(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    with _pipeline(args) as app:
        _refuse_far_future(args.date, app.config.newsletter.timezone, args.force)
        results = app.rebuild(None if args.all else [args.date], lock_timeout=args.lock_timeout)
    for result in results:
        state = "skipped (empty)" if result.skipped else f"{result.stories} stories"
        print(f"{result.date.isoformat()}: {state}, {len(result.changed_files)} files rewritten", file=out)
    rewritten = sum(len(result.changed_files) for result in results)
    print(f"rebuilt {len(results)} issue(s) into {app.output_dir}: {rewritten} files rewritten in all "
          "(pages whose content did not change are left untouched)", file=out)
    return EXIT_OK


def _read_lines(name: str) -> tuple[list[str], str]:
    if name == "-":
        return sys.stdin.read().splitlines(), "<stdin>"
    try:
        return Path(name).read_text(encoding="utf-8").splitlines(), name
    except FileNotFoundError:
        raise PipelineError(f"{name}: file not found") from None
    except UnicodeDecodeError as exc:
        raise PipelineError(f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _cmd_classify(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from pipeline.app import classify_lines
    from pipeline.config.topics import load_topics

    topics = load_topics(_topics_path(args))
    lines, source = _read_lines(args.file)
    count = classify_lines(topics, lines, source, out)
    print(f"classified {count} item(s)", file=err)
    return EXIT_OK


def _cmd_evaluate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from pipeline.app import evaluate_files
    from pipeline.config.topics import load_topics

    topics = load_topics(_topics_path(args))
    print(evaluate_files(topics, [_read_lines(str(path)) for path in args.files]), file=out, end="")
    return EXIT_OK


def _cmd_suggest_rules(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from pipeline.app import suggest_terms
    from pipeline.config.topics import load_topics

    topics = load_topics(_topics_path(args))
    lines, source = _read_lines(str(args.file))
    if Path(args.config).exists():  # the stored items of the archive, when there is one
        with _pipeline(args) as app:
            text = suggest_terms(topics, lines, source, app.stored_items(), topic=args.topic, limit=args.limit)
    else:
        text = suggest_terms(topics, lines, source, (), topic=args.topic, limit=args.limit)
    print(text, file=out, end="")
    return EXIT_OK


def _cmd_try_rules(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    import zoneinfo

    from pipeline.config.topics import load_topics

    with _pipeline(args) as app:
        candidate = load_topics(args.candidate)
        preview = app.try_rules(candidate, since=args.since, until=args.until)
    newsletter, topics_path = app.config.newsletter, app.topics.path
    for change in preview.changes:
        item = change.item
        when = item.published or item.first_seen
        when = when.astimezone(zoneinfo.ZoneInfo(newsletter.timezone)) if when else None
        moves = " ".join([*(f"+{t}" for t in change.added), *(f"-{t}" for t in change.removed)])
        print(f"{when:%Y-%m-%d}  {moves:<28} {item.title} ({item.source})" if when else
              f"{'':10}  {moves:<28} {item.title} ({item.source})", file=out)
        for topic in change.added:  # why it would now be in: the words that matched, in reading order
            words = dict.fromkeys((m.text, m.field) for m in change.classification.matches_for(topic))
            shown = ", ".join(f"{text} ({field})" for text, field in list(words)[:8])
            print(f"{'':12}{topic}: {shown}", file=out)
    for unneeded in preview.unneeded:
        d = unneeded.decision
        print(f"{d.issue_date.isoformat()}  decision {d.action} {d.item_id} by {d.editor} would be unnecessary: "
              f"{unneeded.reason}", file=out)
    if preview.unneeded:
        print(f"{len(preview.unneeded)} editorial decision(s) would be unnecessary with {args.candidate}.", file=out)
    gained = sum(1 for c in preview.changes if c.added)
    lost = sum(1 for c in preview.changes if c.removed)
    print(f"{len(preview.changes)} of {preview.items} stored items would change ({gained} gain a topic, "
          f"{lost} lose one) with {args.candidate} instead of {topics_path}. Nothing was written; "
          f"to apply, replace {topics_path} and run `pipeline rebuild --all`.", file=out)
    return EXIT_OK


def _cmd_check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    with _pipeline(args) as app:
        app.classifier  # noqa: B018 - compiling proves every rule is usable
    config, topics = app.config, app.topics
    enabled = [f for f in config.feeds if f.enabled]
    print(f"{config.path}: ok: {len(config.feeds)} feeds ({len(enabled)} enabled), newsletter "
          f"{config.newsletter.name!r}, time zone {config.newsletter.timezone}, issue at "
          f"{config.newsletter.issue_time:%H:%M}", file=out)
    print(f"{topics.path}: ok: {len(topics.topics)} topics: "
          + ", ".join(f"{t.id} ({t.heading})" for t in topics.info()), file=out)
    return EXIT_OK


def _cmd_archive(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    with _pipeline(args) as app:
        if args.archive_command == "list":
            listing = app.archive_listing()
            for issue in listing:
                note = ""
                if issue.outdated:
                    *first, last = issue.outdated
                    note = f"  ({', '.join(first) + ' and ' if first else ''}{last} changed since built: rebuild)"
                print(f"{issue.date.isoformat()}  {issue.label:<28} "
                      f"{issue.story_count:>3} stories{note}", file=out)
            print(f"{len(listing)} issue(s) in {app.db_path}", file=err)
        elif args.archive_command == "show":
            out.write(app.issue_text(args.date))
        elif args.archive_command == "search":
            if args.limit < 1:
                raise PipelineError(f"--limit must be at least 1, got {args.limit}")
            query = " ".join(args.query)
            hits = app.search(query, limit=args.limit, topic=args.topic)
            for hit in hits:
                print(f"{hit.date.isoformat()}  {hit.title} — {hit.source}", file=out)
                print(f"            {hit.snippet}", file=out)
                if hit.url:
                    print(f"            {hit.url}", file=out)
            print(f"{len(hits)} result(s) for {query!r}" + (" (--limit reached)" if len(hits) == args.limit else ""),
                  file=err)
        elif args.archive_command == "delete":
            deletion = app.delete_issue(args.date, dry_run=not args.yes, lock_timeout=args.lock_timeout)
            _print_deletion(deletion, app.output_dir, out)
            if not deletion.done:
                raise PipelineError(f"nothing deleted; add --yes to delete the issue of {args.date.isoformat()}")
    return EXIT_OK


def _print_deletion(deletion: IssueDeletion, output_dir: Path, out: TextIO) -> None:
    day = deletion.date.isoformat()

    def verb(done: str, planned: str) -> str:
        return done if deletion.done else planned

    if deletion.in_store:
        print(f"{day}: {verb('removed', 'would remove')} the issue ({deletion.stories} stories) from the store and "
              "the search index", file=out)
    else:
        print(f"{day}: not in the store any more (an interrupted deletion); only its pages are left", file=out)
    pages = ", ".join(str(page) for page in deletion.pages) or f"no page in {output_dir}"
    print(f"{day}: {verb('removed', 'would remove')} {pages}; index, topic pages, feed.xml and search "
          f"{verb('rewritten', 'would be rewritten')} without it", file=out)
    for neighbour in deletion.neighbours:
        print(f"{neighbour.isoformat()}: previous/next links {verb('re-rendered', 'would be re-rendered')}", file=out)
    print(f"{day}: {len(deletion.featured)} featured item(s) {verb('freed', 'would be freed')} for other issues; "
          f"{len(deletion.forgotten)} undated item(s) its runs saw first {verb('forgotten', 'would be forgotten')} "
          "(the next run stores them again, as seen then)", file=out)
    if deletion.later_issues:
        dates = " ".join(d.isoformat() for d in deletion.later_issues)
        print(f"notice: {dates} may show items it featured: `pipeline rebuild --date DATE` for each", file=out)


def _cmd_feeds(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    with _pipeline(args) as app:
        if args.feeds_command == "list":
            _print_feed_statuses(app.feed_statuses(), app.config.newsletter.timezone, out)
            return EXIT_OK
        changed = app.set_feeds_enabled(list(args.ids) or None, enabled=args.feeds_command == "enable")
    print(f"{args.feeds_command}d {changed} feed(s)", file=out)
    return EXIT_OK


def _print_feed_statuses(statuses: Sequence[FeedStatus], timezone: str, out: TextIO) -> None:
    """One line per configured feed under a header; times in the newsletter's time zone."""
    import zoneinfo

    zone = zoneinfo.ZoneInfo(timezone)
    width = max([28, *(len(status.feed.id) + 1 for status in statuses)])
    print(f"{'FEED':<{width}} {'STATUS':<10} {'FAILURES':>8}  {'LAST SUCCESS (' + timezone + ')':<30} "
          f"{'ITEMS':>6}  {'NEWEST ITEM':<11} LAST ERROR", file=out)
    for status in statuses:
        feed, health = status.feed, status.health
        if health is None:
            print(f"{feed.id:<{width}} never fetched", file=out)
            continue
        state = "disabled" if health.disabled else (health.last_status or "?")
        success = f"{health.last_success.astimezone(zone):%Y-%m-%d %H:%M %Z}" if health.last_success else "-"
        newest = f"{status.newest_item.astimezone(zone):%Y-%m-%d}" if status.newest_item else "-"
        print(f"{feed.id:<{width}} {state:<10} {health.consecutive_failures:>8}  {success:<30} "
              f"{health.items_seen:>6}  {newest:<11} {health.last_error or ''}".rstrip(), file=out)


def _cmd_serve(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from pipeline.serve import serve_site

    app = _pipeline(args)
    serve_site(app.output_dir, app.templates_dir, args.host, args.port, out=out, log=err)
    return EXIT_OK


def _cmd_desk(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from pipeline.desk import serve_desk

    _pipeline(args).close()  # config and rules checked here, before anything listens
    serve_desk(lambda: _pipeline(args), args.host, args.port, out=out, log=err)
    return EXIT_OK


def _cmd_worker(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from pipeline.worker import parse_queues, run_worker

    queues = parse_queues(args.queues)
    _start_worker_logs(err)
    run_worker(lambda: _pipeline(args), queues, args.concurrency, name=args.name)
    return EXIT_OK


def _start_worker_logs(err: TextIO) -> None:
    import logging

    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.getLogger("pipeline").addHandler(handler)
    logging.getLogger("pipeline").setLevel(logging.INFO)
    logging.getLogger("procrastinate").addHandler(handler)
    logging.getLogger("procrastinate").setLevel(logging.WARNING)


def _cmd_schedule(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from pipeline.schedule import DailyScheduler, ScheduleLog, make_plan, run_once, serve

    config = _pipeline(args).config  # validates the config and the rules before anything is scheduled
    if config.store_backend == "postgresql" and not args.once:
        from pipeline.worker import SCHEDULE_QUEUE, run_worker

        # The distributed mode: this process only enqueues (due feeds, the day's build); workers do the work.
        print(f"scheduling on PostgreSQL: enqueueing every {config.workers.tick_seconds} s for `pipeline worker` "
              "processes", file=out)
        _start_worker_logs(err)
        run_worker(lambda: _pipeline(args), [SCHEDULE_QUEUE], 1, name="schedule")
        return EXIT_OK
    plan = make_plan(config.schedule, config.path, cron=args.cron, timezone=args.timezone,
                     log_file=args.log_file, lock_timeout=args.lock_timeout,
                     draft_time=config.delivery.draft_time if config.delivery else None)
    log = ScheduleLog(err, plan.log_file, plan.zone)
    # The pipeline is made again before each build, so rule edits apply without a restart.
    scheduler = DailyScheduler(lambda: _pipeline(args), plan, log, failures_from_store=args.once)
    return run_once(scheduler, out) if args.once else serve(scheduler, out)


def _cmd_send(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from pipeline.app import delivery_summary

    def show(event: DeliveryEvent) -> None:
        if event.outcome in ("failed-permanent", "failed-temporary"):
            print(f"warning: {event.email}: {event.outcome}: {event.detail}", file=err)
        elif event.outcome == "uncertain":
            print(f"warning: {event.email}: connection lost after the message was handed over: {event.detail}",
                  file=err)
        elif event.outcome == "retrying":
            print(f"notice: {event.email}: {event.detail}", file=err)

    with _pipeline(args) as app:
        app.delivery_settings()  # no `delivery:` section: say so before anything else
        date = args.date or app.today()
        if app.config.store_backend == "postgresql" and not args.dry_run:
            from pipeline.worker import enqueue_mailing

            app.stored_issue(date)  # an issue never built is said now, not in a worker's log
            if args.resend_uncertain:  # refused before any finding is recorded
                enqueue_mailing(lambda: _pipeline(args), date, resend_uncertain=True)
            settled = app.settle_uncertain(date, args.confirm_delivered, args.confirm_lost)
            enqueue_mailing(lambda: _pipeline(args), date)
            print(f"{date.isoformat()}: queued for the email workers (`pipeline worker --queues email`); "
                  "each batch logs what it sent", file=out)
            if settled.settled_delivered or settled.settled_lost:
                print(f"{date.isoformat()}: settled by the operator: {len(settled.settled_delivered)} delivered "
                      f"(not sent again), {len(settled.settled_lost)} lost (queued again)", file=out)
            return EXIT_OK
        report = app.send(date, dry_run=args.dry_run, outbox=args.outbox, resend_uncertain=args.resend_uncertain,
                          confirm_delivered=args.confirm_delivered, confirm_lost=args.confirm_lost, on_event=show)
    for email, message_id in report.uncertain:
        bare = message_id.strip("<>")  # angle brackets would be redirections in a shell
        print(f"warning: {email}: may already have it (Message-ID {message_id}); not resent. Look the "
              f"Message-ID up in the mail server's log, then record what it says: `pipeline send --date "
              f"{date.isoformat()} --confirm-delivered {bare}` if it is there, `--confirm-lost {bare}` "
              "(mailed again) if not", file=err)
    print(delivery_summary(report), file=out)
    return EXIT_OK if report.complete else EXIT_FAILED


def _cmd_subscribers(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    with _pipeline(args) as app:
        if args.subscribers_command == "list":
            listed = app.subscribers()
            path, suppressed = listed.path, listed.suppressed
            for r in listed.recipients:
                state = f"suppressed ({suppressed[r.key].reason})" if r.key in suppressed else "active"
                print(f"{r.email:<40} {state:<24} {' '.join(r.topics) or 'all topics':<30} {r.name}", file=out)
            keys = {r.key for r in listed.recipients}
            for email, entry in suppressed.items():
                if email not in keys:
                    print(f"{email:<40} {'suppressed (' + entry.reason + ')':<24} not in {path.name}", file=out)
            active = sum(1 for r in listed.recipients if r.key not in suppressed)
            print(f"{len(listed.recipients)} reader(s) in {path}, {active} active, {len(suppressed)} suppressed "
                  "address(es)", file=err)
        elif args.subscribers_command == "add":
            topics = [t for t in args.interests.replace(";", ",").replace(" ", ",").split(",") if t]
            recipient, lifted = app.add_subscriber(args.email, name=args.name, topics=topics)
            print(f"added {recipient.email} to {app.delivery_settings().recipients}", file=out)
            if lifted:
                print(f"notice: {recipient.email} was suppressed ({lifted.reason}); it will receive issues again",
                      file=err)
        else:
            recipient = app.remove_subscriber(args.email)
            print(f"removed {recipient.email} from {app.delivery_settings().recipients}; the address is "
                  "suppressed", file=out)
    return EXIT_OK


def _show_draft(view: DraftView, out: TextIO) -> None:
    print(f"{view.date.isoformat()}: {len(view.stories)} stories", file=out)
    for entry in view.stories:
        story = entry.story
        where = "LEAD" if entry.part == "lead" else f"{entry.part}:{entry.section}"
        print(f"{where:<28} {story.id}  {story.kicker} {story.title} ({story.source})", file=out)
        for topic in story.topics:
            words = ", ".join(entry.matched.get(topic, ())[:8])
            print(f"{'':29}{topic}: {words}", file=out)
    for decision in view.decisions:
        detail = decision.section or decision.text or ""
        print(f"decision: {decision.decided_at:%Y-%m-%d %H:%M} UTC {decision.editor}: {decision.action} "
              f"{decision.item_id} {detail}".rstrip(), file=out)
    approval = view.approval
    if view.approved and approval is not None:
        state = f"approved by {approval.editor} at {approval.approved_at:%Y-%m-%d %H:%M} UTC"
    elif approval is not None:
        state = f"changed since {approval.editor} approved it at {approval.approved_at:%H:%M} UTC: not approved"
    else:
        state = "not approved"
    listed = "published in the archive" if view.published else "a draft, not listed in the archive yet"
    mailed = f", mailed to {view.sent} reader(s)" if view.sent else ""
    print(f"{state}; {listed}{mailed}", file=out)


def _cmd_editorial(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from pipeline.app import EditorialDecision, utc_now

    with _pipeline(args) as app:
        date = args.date or app.today()
        if args.command == "draft":
            _show_draft(app.draft(date), out)
        elif args.command == "decide":
            view = app.decide(EditorialDecision(issue_date=date, action=args.action, item_id=args.item,
                                                editor=args.editor, decided_at=utc_now(), section=args.section,
                                                text=args.text), lock_timeout=args.lock_timeout)
            print(f"{date.isoformat()}: {args.action} {args.item} recorded; the issue now has "
                  f"{len(view.stories)} stories (see `pipeline draft --date {date.isoformat()}`)", file=out)
        elif args.command == "candidates":
            query = " ".join(args.query) or None
            found = app.candidates(date, query, limit=args.limit)
            for candidate in found:
                item = candidate.item
                topics = " ".join(candidate.topics) or "-"
                print(f"{item.id}  {topics:<20} {item.title} ({item.source})", file=out)
            print(f"{len(found)} item(s) of the window of {date.isoformat()} left out of its issue", file=err)
        elif args.command == "approve":
            approval = app.approve(date, args.editor, lock_timeout=args.lock_timeout)
            print(f"{date.isoformat()}: approved by {approval.editor} at {approval.approved_at:%Y-%m-%d %H:%M} UTC",
                  file=out)
        else:
            reply = app.send_test(date, args.to)
            print(f"{date.isoformat()}: test sent to {args.to} ({reply}); no reader's delivery recorded", file=out)
    return EXIT_OK


COMMANDS = {
    "run": _cmd_run,
    "rebuild": _cmd_rebuild,
    "classify": _cmd_classify,
    "evaluate": _cmd_evaluate,
    "suggest-rules": _cmd_suggest_rules,
    "check": _cmd_check,
    "try-rules": _cmd_try_rules,
    "archive": _cmd_archive,
    "feeds": _cmd_feeds,
    "serve": _cmd_serve,
    "desk": _cmd_desk,
    "send": _cmd_send,
    "subscribers": _cmd_subscribers,
    "schedule": _cmd_schedule,
    "worker": _cmd_worker,
    "draft": _cmd_editorial,
    "decide": _cmd_editorial,
    "candidates": _cmd_editorial,
    "approve": _cmd_editorial,
    "send-test": _cmd_editorial,
}


def _store_error() -> type[Exception]:
    from pipeline.app import StoreError

    return StoreError


# The collector's youngest generation is collected every this many new objects (Python's default:
# 700). See _own_process.
YOUNG_COLLECTION = 50_000


@contextmanager
def _own_process() -> Iterator[None]:
    """Collector settings for a process that runs one command and ends (not for callers of main()
    with their own arguments, such as tests). A command makes some 40,000 objects as it starts
    (modules, classes, the rules) that live until it exits; with the default thresholds a run whose
    feeds all answer 304 spent about a fifth of its CPU walking them again (130 young, 12 middle
    and one full collection, then the interpreter's full ones at exit). Collecting every 50,000 new
    objects still reclaims cycles, in long-running commands (serve, desk, worker, schedule) too.
    At the end everything is frozen: the process ends next, and its last collections skip it."""
    gc.set_threshold(YOUNG_COLLECTION, *gc.get_threshold()[1:])
    try:
        yield
    finally:
        gc.freeze()


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """The `pipeline` command. `argv`: its arguments, None for this process's own command line."""
    if argv is not None:
        return _main(argv, out, err)
    with _own_process():
        return _main(argv, out, err)


def _main(argv: Sequence[str] | None, out: TextIO | None, err: TextIO | None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # bare `pipeline`: what can it do?
        parser.print_help(out)
        return EXIT_USAGE
    try:
        return COMMANDS[args.command](args, out, err)
    except PipelineError as exc:
        print(f"pipeline: error: {exc}", file=err)
        return exc.exit_code
    except KeyboardInterrupt:
        print("pipeline: interrupted", file=err)
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except _store_error() as exc:  # database locked, disk full, corrupt file: the store is left as it was
        print(f"pipeline: error: database: {exc}", file=err)
        return EXIT_FAILED
    except OSError as exc:  # disk full, read-only folder, permissions
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"pipeline: error: {where}{exc.strerror or exc}", file=err)
        return EXIT_FAILED
