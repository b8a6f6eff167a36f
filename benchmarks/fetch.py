"""Benchmark: fetching, parsing and storing many slow feeds, against the naive loop, in one run.

A local server (benchmarks/feedserver.py, a process of its own) serves N generated RSS feeds of
20 items each over up to 250 loopback addresses (127.0.0.2, ...; the feeds of one address are one
outlet), every answer delayed by 250 ms, as a distant news site would be. Then:

  (a) naive: a sequential loop of ``feedparser.parse(url)`` (``--naive-feeds M`` measures M of the
      N feeds, evenly spread, and scales the time by N/M: the loop is sequential, feed after feed);
  (b) the pipeline: ``Pipeline.fetch_and_store`` with the default settings, on a new SQLite store:
      concurrent fetch, each body parsed in a process pool as it arrives, items stored;
  (c) the same again: every feed answers 304 to the validators stored in (b).

(b) and (c) run in a child process, so that its peak memory (its own, plus its parse workers')
is the pipeline's alone. Targets: a/b >= 15 and peak memory <= 400 MB at 2,000 feeds x 20 items.

    .venv/bin/python benchmarks/fetch.py [--feeds 2000] [--items 20] [--naive-feeds M] [--latency 0.25]
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from email.utils import format_datetime
from multiprocessing.connection import Connection
from pathlib import Path
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import feedparser  # noqa: E402

from benchmarks.feedserver import MAX_HOSTS, FeedServer  # noqa: E402

TOPICS = (
    "La CNIL inflige une amende au titre du RGPD",
    "Meta AI : l'entraînement sur les données publiques des Européens",
    "AI Act : les obligations des modèles à usage général entrent en vigueur",
    "Accord de licence entre un éditeur de presse et une start-up d'IA",
    "Le CEPD publie un avis sur l'intérêt légitime",
)
DATE = dt.date(2025, 5, 20)


def make_feed(index: int, items: int) -> bytes:
    """A plausible French tech-policy RSS feed: titles, HTML descriptions, dates, categories."""
    base = dt.datetime(2025, 5, 20, 6, 0, tzinfo=dt.UTC)
    entries = []
    for n in range(items):
        topic = TOPICS[(index + n) % len(TOPICS)]
        published = format_datetime(base - dt.timedelta(hours=n + index % 7))
        description = (
            f"<p>{escape(topic)} — article {n} du média {index}. Les autorités européennes "
            "de protection des données examinent la question, et les éditeurs de presse "
            'négocient leurs droits voisins avec les plateformes. <a href="https://example.org/">'
            "Lire la suite</a> <em>sur notre site</em>.</p>"
        )
        entries.append(
            f"<item><title>{escape(topic)} ({index}-{n})</title>"
            f"<link>https://media{index}.example/articles/{n}?utm_source=rss</link>"
            f'<guid isPermaLink="false">media{index}-{n}</guid>'
            f"<pubDate>{published}</pubDate><category>Numérique</category><category>Europe</category>"
            f"<description>{escape(description)}</description></item>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>'
        f"<title>Média {index}</title><link>https://media{index}.example/</link>"
        f"<description>Actualité numérique</description><language>fr</language>{''.join(entries)}"
        "</channel></rss>\n"
    ).encode()


def _cpu() -> float:
    """CPU seconds of this process and of its finished children (the parse workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _pipeline_runs(urls: list[str], concurrency: int, report: Connection) -> None:
    """(b) and (c), in this (child) process; sends back times, counts and peak memory."""
    from pipeline.app import Pipeline
    from pipeline.config import load_config
    from pipeline.config.topics import load_topics
    from pipeline.store import StoreTarget

    with tempfile.TemporaryDirectory(prefix="bench-fetch-") as temp:
        folder = Path(temp)
        fetch = f"fetch:\n  concurrency: {concurrency}\n" if concurrency else ""
        config = folder / "sources.yaml"
        config.write_text(fetch + "feeds:\n" + "".join(f"  - {{id: media{n}, name: Média {n}, url: '{url}'}}\n"
                                                        for n, url in enumerate(urls)), encoding="utf-8")
        app = Pipeline(load_config(config), load_topics(ROOT / "topics.yaml"), store=StoreTarget(folder / "db"),
                       output_dir=folder / "out")
        now = dt.datetime(2025, 5, 20, 4, 0, tzinfo=dt.UTC)
        with app:
            started, cpu = time.perf_counter(), _cpu()
            first = app.fetch_and_store(DATE, now)
            first_time, first_cpu = time.perf_counter() - started, _cpu() - cpu
            started = time.perf_counter()
            second = app.fetch_and_store(DATE, now + dt.timedelta(hours=1))
            second_time = time.perf_counter() - started
            stored = app.store.item_count()
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    report.send({
        "first": first_time, "first_cpu": first_cpu, "second": second_time, "stored": stored,
        "new": sum(r.status == "new" for r in first), "unchanged": sum(r.status == "unchanged" for r in second),
        "failed": [r.error for r in first if r.status == "failed"][:3], "own_mb": own, "worker_mb": workers,
    })


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--feeds", type=int, default=2000, help="number of feeds (default 2000)")
    parser.add_argument("--items", type=int, default=20, help="items per feed (default 20)")
    parser.add_argument("--latency", type=float, default=0.25, help="server delay per answer, s (default 0.25)")
    parser.add_argument("--naive-feeds", type=int, default=0,
                        help="measure the naive loop on this many feeds and scale (default: all)")
    parser.add_argument("--concurrency", type=int, default=0, help="fetch.concurrency (default: the config's)")
    args = parser.parse_args(argv)
    n = args.feeds
    hosts = min(n, MAX_HOSTS)
    workers = len(os.sched_getaffinity(0))
    bodies = [make_feed(i, args.items) for i in range(n)]
    load = os.getloadavg()
    print(f"{n} feeds x {args.items} items ({sum(map(len, bodies)) / 1e6:.1f} MB) on {hosts} hosts, "
          f"{args.latency * 1000:.0f} ms per answer; {workers} cores, load average "
          f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")

    with FeedServer(bodies, hosts=hosts, latency=args.latency, content_type="application/rss+xml; charset=utf-8") \
            as server:
        # (a) the naive loop, on every feed or on an even sample of them
        sample = server.urls if not args.naive_feeds else server.urls[:: max(1, n // args.naive_feeds)]
        started, cpu = time.perf_counter(), time.process_time()
        naive_items = sum(len(feedparser.parse(url).entries) for url in sample)
        measured, naive_cpu = time.perf_counter() - started, time.process_time() - cpu
        naive = measured * n / len(sample)
        scaled = "" if len(sample) == n else f", measured on {len(sample)} feeds ({measured:.1f} s) and scaled"
        print(f"(a) naive sequential feedparser.parse(url): {naive:8.2f} s  (CPU {naive_cpu * n / len(sample):.1f} s; "
              f"{naive_items} items{scaled})")

        # (b), (c) in a child process
        receiver, sender = multiprocessing.Pipe(duplex=False)
        child = multiprocessing.get_context("fork").Process(
            target=_pipeline_runs, args=(server.urls, args.concurrency, sender))
        child.start()
        result = receiver.recv()
        child.join()

    first, second = result["first"], result["second"]
    peak = result["own_mb"] + workers * result["worker_mb"]
    print(f"(b) pipeline fetch + parse + store:          {first:8.2f} s  (CPU {result['first_cpu']:.1f} s, parse "
          f"workers included; {result['stored']} items stored, the run's budget; {result['new']}/{n} feeds new)")
    print(f"(c) the same again, all 304:                 {second:8.2f} s  ({result['unchanged']}/{n} unchanged)")
    print(f"peak memory: {result['own_mb']:.0f} MB (the run) + {workers} x {result['worker_mb']:.0f} MB (parse "
          f"workers, the largest) = {peak:.0f} MB at most")
    ratio = naive / first
    print()
    print(f"a / b = {ratio:.1f}        target >= 15:     {'met' if ratio >= 15 else 'MISSED'}")
    print(f"peak memory {peak:.0f} MB  target <= 400 MB: {'met' if peak <= 400 else 'MISSED'}")
    if result["failed"] or result["new"] != n or result["unchanged"] != n:
        print(f"inconsistent runs: {result['new']}/{n} new in (b), {result['unchanged']}/{n} unchanged in (c); "
              f"failures: {result['failed']}")
        return 1
    return 0 if ratio >= 15 and peak <= 400 else 2


if __name__ == "__main__":
    raise SystemExit(main())
