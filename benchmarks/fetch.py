"""Benchmark: fetching and parsing many slow feeds, against the naive approach, in one run.

A local server (in its own process, so its work does not share our GIL) serves N generated
RSS feeds of 50 items each, every answer delayed by 250 ms, as a distant news site would be.
Then, one after the other:

  (a) naive: a sequential loop of `feedparser.parse(url)`;
  (b) the pipeline: `pipeline.fetch.fetch_feeds` then `pipeline.parse.parse_feed` per body;
  (c) the pipeline's next run, when every feed answers 304 to the ETag it stored in (b).

Targets: b within 1.5x of (slowest single feed + total parse time), a/b >= 15, b/c >= 5.

Real feeds come from many outlets: the server listens on several loopback addresses
(127.0.0.1, 127.0.0.2, ...; --hosts, default one per 4 feeds) and the pipeline keeps its
default per-host limit of 4, with a global concurrency of N (--concurrency). Usage:

    python benchmarks/fetch.py [--feeds 200] [--hosts 50] [--latency 0.25] [--concurrency N] [--per-host 4]
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import sys
import threading
import time
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from pathlib import Path
from xml.sax.saxutils import escape

# Run from a checkout without installing: the repository root holds the `pipeline` package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import feedparser

from pipeline.fetch import fetch_feeds
from pipeline.models import FeedSource, FeedState, FetchResult, FetchSettings, FetchStatus
from pipeline.parse import parse_feed

ITEMS_PER_FEED = 50
TOPICS = (
    "La CNIL inflige une amende au titre du RGPD",
    "Meta AI : l'entraînement sur les données publiques des Européens",
    "AI Act : les obligations des modèles à usage général entrent en vigueur",
    "Accord de licence entre un éditeur de presse et une start-up d'IA",
    "Le CEPD publie un avis sur l'intérêt légitime",
)


def make_feed(index: int) -> bytes:
    """A plausible French tech-policy RSS feed: titles, HTML descriptions, dates, categories."""
    base = dt.datetime(2025, 5, 20, 6, 0, tzinfo=dt.UTC)
    items = []
    for n in range(ITEMS_PER_FEED):
        topic = TOPICS[(index + n) % len(TOPICS)]
        published = format_datetime(base - dt.timedelta(hours=n + index % 7))
        description = (
            f"<p>{escape(topic)} — article {n} du média {index}. Les autorités européennes "
            "de protection des données examinent la question, et les éditeurs de presse "
            'négocient leurs droits voisins avec les plateformes. <a href="https://example.org/">'
            "Lire la suite</a> <em>sur notre site</em>.</p>"
        )
        items.append(
            f"<item><title>{escape(topic)} ({index}-{n})</title>"
            f"<link>https://media{index}.example/articles/{n}?utm_source=rss</link>"
            f'<guid isPermaLink="false">media{index}-{n}</guid>'
            f"<pubDate>{published}</pubDate><category>Numérique</category><category>Europe</category>"
            f"<description>{escape(description)}</description></item>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>'
        f"<title>Média {index}</title><link>https://media{index}.example/</link>"
        f"<description>Actualité numérique</description><language>fr</language>{''.join(items)}"
        "</channel></rss>\n"
    ).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # the default backlog of 5 would refuse a burst of connections


def _serve(feeds: int, hosts: int, latency: float, ready: Connection) -> None:
    bodies = [make_feed(i) for i in range(feeds)]
    etags = [f'"media{i}-v1"' for i in range(feeds)]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            time.sleep(latency)  # a distant, slow site: every answer, 304s included, takes this long
            try:
                index = int(self.path.strip("/").removesuffix(".xml").removeprefix("feed"))
                body = bodies[index]
            except (ValueError, IndexError):
                self.send_error(404)
                return
            if self.headers.get("If-None-Match") == etags[index]:
                self.send_response(304)
                self.send_header("ETag", etags[index])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/rss+xml; charset=utf-8")
            self.send_header("ETag", etags[index])
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    # Real feeds come from many outlets; each outlet here is its own loopback address
    # (127.0.0.1, 127.0.0.2, ...: all of 127/8 is local), so per-host limits act as in production.
    servers = [_Server((f"127.0.0.{k + 1}", 0), Handler) for k in range(hosts)]
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    ready.send([f"{host}:{port}" for host, port in (srv.server_address[:2] for srv in servers)])
    servers[0].serve_forever()


def _parse_all(results: list[FetchResult], seen_at: dt.datetime) -> tuple[int, float]:
    started = time.perf_counter()
    items = 0
    for result in results:
        if result.body is not None:
            items += len(parse_feed(result, seen_at).items)
    return items, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--feeds", type=int, default=200, help="number of feeds (default 200)")
    parser.add_argument("--latency", type=float, default=0.25, help="server delay per answer, s (default 0.25)")
    parser.add_argument("--hosts", type=int, default=0, help="outlets the feeds are spread over (default feeds/4)")
    parser.add_argument("--concurrency", type=int, default=0, help="fetch concurrency (default: --feeds)")
    parser.add_argument("--per-host", type=int, default=FetchSettings.per_host, help="fetch limit per host")
    args = parser.parse_args(argv)
    n = args.feeds
    hosts = min(args.hosts or max(1, n // 4), 250)
    concurrency = args.concurrency or n

    receiver, sender = multiprocessing.Pipe(duplex=False)
    server = multiprocessing.Process(target=_serve, args=(n, hosts, args.latency, sender), daemon=True)
    server.start()
    try:
        addresses = receiver.recv()
        urls = [f"http://{addresses[i % hosts]}/feed{i}.xml" for i in range(n)]
        feeds = [FeedSource(id=f"media{i}", name=f"Média {i}", url=url) for i, url in enumerate(urls)]
        settings = FetchSettings(concurrency=concurrency, per_host=args.per_host)
        seen_at = dt.datetime.now(dt.UTC)
        print(
            f"{n} feeds x {ITEMS_PER_FEED} items on {hosts} hosts, {args.latency * 1000:.0f} ms latency each; "
            f"fetch concurrency {concurrency}, per host {args.per_host}"
        )

        # (a) the naive loop
        started = time.perf_counter()
        naive_items = sum(len(feedparser.parse(url).entries) for url in urls)
        naive = time.perf_counter() - started
        print(f"(a) naive sequential feedparser.parse(url): {naive:8.2f} s  ({naive_items} items)")

        # (b) the pipeline, first run
        started = time.perf_counter()
        results = fetch_feeds(feeds, settings, {})
        fetched = time.perf_counter() - started
        items, parse_time = _parse_all(results, seen_at)
        first = time.perf_counter() - started
        bad = [r for r in results if r.status is not FetchStatus.NEW]
        slowest = max(r.elapsed for r in results)
        print(
            f"(b) pipeline fetch + parse:                 {first:8.2f} s  ({items} items; fetch "
            f"{fetched:.2f} s, parse {parse_time:.2f} s, slowest feed {slowest:.2f} s)"
        )

        # (c) the next run: every feed answers 304 to its stored ETag
        states = {r.feed.id: FeedState(r.feed.id, etag=r.etag, last_modified=r.last_modified) for r in results}
        started = time.perf_counter()
        again = fetch_feeds(feeds, settings, states)
        _, _reparse = _parse_all(again, seen_at)
        second = time.perf_counter() - started
        unchanged = sum(r.status is FetchStatus.UNCHANGED for r in again)
        print(f"(c) pipeline second run, all 304:           {second:8.2f} s  ({unchanged}/{n} unchanged)")

        # The slowest single feed, fetched on its own (no queueing behind the others).
        alone = 0.0
        for source in feeds[:: max(1, n // 5)]:
            started = time.perf_counter()
            fetch_feeds([source], settings, {})
            alone = max(alone, time.perf_counter() - started)
    finally:
        server.terminate()
        server.join()

    bound = alone + parse_time
    print(
        f"slowest single feed alone {alone:.2f} s; parse {parse_time / n * 1000:.0f} ms per feed; "
        f"fetching alone: {n} x {args.latency:g} s = {n * args.latency:.1f} s of waiting in (a) "
        f"vs {fetched:.2f} s in (b), {n * args.latency / fetched:.0f}x"
    )
    checks = [
        (f"b / (slowest + parse) = {first / bound:.2f}", first <= 1.5 * bound, "<= 1.5"),
        (f"a / b = {naive / first:.1f}", naive / first >= 15, ">= 15"),
        (f"b / c = {first / second:.1f}", first / second >= 5, ">= 5"),
    ]
    print()
    for text, ok, target in checks:
        print(f"{text:34} target {target:7} {'ok' if ok else 'MISSED'}")
    if bad or unchanged != n or items != naive_items:
        print(
            f"inconsistent runs: {len(bad)} feeds not new in (b), {unchanged}/{n} unchanged in (c), "
            f"{items} vs {naive_items} items"
        )
        return 1
    return 0 if all(ok for _, ok, _ in checks) else 2


if __name__ == "__main__":
    raise SystemExit(main())
