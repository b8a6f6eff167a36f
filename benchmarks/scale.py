"""Benchmark: the distributed mode (PostgreSQL + `pipeline worker`) against the SQLite single
process, and its correctness under load. Everything stays on this machine's loopback addresses.

A throwaway PostgreSQL cluster is started (tests/pgcluster.py: Debian's postgresql binaries).

  1. Fetch rounds. N feeds (default 2,000) of 10 items, each on its own loopback host
     (127.0.0.2, 127.0.0.3…), every answer 250 ms late, served by a separate process.
     (a) SQLite, one process: `Pipeline.fetch_and_store` over every feed (fetch.concurrency 16),
         which is the fetching part of `pipeline run`;
     (b) 1, 2 and 4 `pipeline worker --queues feeds --concurrency 16` processes on PostgreSQL,
         one fetch_feed job per feed (fetch, parse, classify, store).
     Printed: wall time of a round and feeds/s, and each against (a).
  2. Email. R readers (default 20,000) to a local aiosmtpd sink (its own process), 2 workers,
     one SIGKILLed mid-batch; the other retries its batch once the victim's heartbeat is stale.
     Checked: every reader got exactly one message (counted by recipient at the sink), except
     the uncertain sends (at most one per killed worker), which are listed.
  3. Periodic slots. 3 workers running the periodic tasks for a few slots over F feeds
     (default 200, workers.min_fetch_interval 1 minute): each feed fetched at most once per
     slot, the day's issue built once, and how many periodic jobs a slot got.

On a 2-core machine shared with other work, the absolute rates say little: what matters is that
the results are right and how the time changes with workers. Usage:

    python benchmarks/scale.py [--feeds 2000] [--readers 20000] [--slot-feeds 200] [--skip fetch,email,slots]
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import signal
import sys
import tempfile
import time
from collections import Counter
from multiprocessing.connection import Connection
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import psycopg  # noqa: E402
from distributed import FeedServer, SmtpSink, Workers, free_port, rss, wait_for, worker_env, write_config  # noqa: E402
from pgcluster import Cluster, find_pg_bin  # noqa: E402

from pipeline.app import Pipeline  # noqa: E402
from pipeline.store import DeliveryStatus, StoreTarget  # noqa: E402

NOW = dt.datetime.now(dt.UTC)
TOPICS = ROOT / "topics.yaml"
SECRET = "unsubscribe-key-for-the-scale-benchmark-0123"


def loopback_hosts(count: int) -> list[str]:
    """127.0.0.2, 127.0.0.3, … (one distinct host per feed; 127.0.0.1 and x.x.x.0/255 left alone)."""
    hosts: list[str] = []
    number = 2
    while len(hosts) < count:
        if number % 256 not in (0, 255):
            hosts.append(f"127.{number // 65536 % 256}.{number // 256 % 256}.{number % 256}")
        number += 1
    return hosts


def _serve_feeds(hosts: list[str], items: int, latency: float, pipe: Connection) -> None:
    with FeedServer(hosts, lambda n: rss(n, items, NOW), latency=latency) as server:
        pipe.send(server.port)
        pipe.recv()  # until the parent asks for the counts
        pipe.send(dict(server.requests))


def _serve_smtp(port: int, pipe: Connection) -> None:
    sink = SmtpSink.start(port)
    pipe.send("ready")
    while True:
        if pipe.poll(0.2):
            if pipe.recv() == "stop":
                break
            pipe.send(sink.inbox.total)
    pipe.send(dict(sink.inbox.by_recipient))
    sink.stop()


def query(dsn: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as db:
        return db.execute(sql).fetchall()  # type: ignore[arg-type]  # the benchmark's own queries


class Feeds:
    """The feed server process and the counts it keeps."""

    def __init__(self, count: int, items: int, latency: float):
        self.hosts = loopback_hosts(count)
        self.parent, child = multiprocessing.Pipe()
        self.process = multiprocessing.Process(target=_serve_feeds, args=(self.hosts, items, latency, child),
                                               daemon=True)
        self.process.start()
        self.port = self.parent.recv()
        self.urls = [f"http://{host}:{self.port}/feed/{n}.xml" for n, host in enumerate(self.hosts)]

    def requests(self) -> dict[tuple[str, str], int]:
        self.parent.send("counts")
        counts: dict[tuple[str, str], int] = self.parent.recv()
        self.process.terminate()
        return counts


def new_database(cluster: Cluster, name: str) -> str:
    cluster.drop_database(name)
    return cluster.create_database(name)


def fetch_rounds(cluster: Cluster, folder: Path, feeds: int) -> None:
    print(f"1. fetch rounds: {feeds} feeds of 10 items, one loopback host each, 250 ms latency")
    server = Feeds(feeds, 10, 0.25)
    settings = {"concurrency": 16, "per_host": 4}
    try:
        sqlite_dir = folder / "sqlite"
        sqlite_dir.mkdir()
        config = write_config(sqlite_dir, server.urls, fetch=settings)
        config.write_text(config.read_text().replace("backend: postgresql", "backend: sqlite"))
        with Pipeline.from_files(config, TOPICS) as app:
            started = time.monotonic()
            reports = app.fetch_and_store(NOW.date(), NOW)
            baseline = time.monotonic() - started
        read = sum(r.status == "new" for r in reports)
        print(f"   (a) SQLite, one process: {baseline:.1f} s, {feeds / baseline:.1f} feeds/s ({read} read)")
        for count in (1, 2, 4):
            dsn = new_database(cluster, f"scale_fetch_{count}")
            run_dir = folder / f"workers{count}"
            run_dir.mkdir()
            config = write_config(run_dir, server.urls, fetch=settings,
                                  workers={"tick_seconds": 60, "min_fetch_interval": 60})
            workers = Workers(config, worker_env(dsn))
            try:
                with Pipeline(*_loaded(config), store=StoreTarget(run_dir / "data", "postgresql", dsn),
                              output_dir=run_dir / "output") as app:
                    app.store.item_count()  # migrated before the workers start
                    for number in range(count):
                        workers.start("--queues", "feeds", "--concurrency", "16", name=f"w{number}")
                    time.sleep(3)  # the workers' start-up is not part of a round
                    started = time.monotonic()
                    enqueue_round(app, dsn)
                    wait_for(lambda d=dsn: finished(d, "fetch_feed") >= feeds, 1800, "the round", workers)
                    elapsed = time.monotonic() - started
                stored = query(dsn, "SELECT count(*) FROM items")[0][0]
                print(f"   (b) {count} worker(s): {elapsed:.1f} s, {feeds / elapsed:.1f} feeds/s, "
                      f"{baseline / elapsed:.2f}x the SQLite process ({stored} items stored)")
            finally:
                workers.stop()
    finally:
        server.requests()


def _loaded(config: Path):  # -> (Config, TopicsConfig)
    from pipeline.config import load_config
    from pipeline.config.topics import load_topics

    return load_config(config), load_topics(TOPICS)


def enqueue_round(app: Pipeline, dsn: str) -> None:
    """One round: what the periodic enqueue_due_feeds job does, run now."""
    from pipeline.worker import build_queue_app, host_slot, install_queue_schema

    queue = build_queue_app(dsn, lambda: app, 60)
    with queue.app.open():
        install_queue_schema(queue.app)
        per_host = app.config.fetch.per_host
        for feed in app.claim_due_feeds():
            queue.app.configure_task("fetch_feed", lock=host_slot(feed, per_host),
                                     queueing_lock=f"feed:{feed.id}").defer(feed_id=feed.id)


def finished(dsn: str, task: str) -> int:
    return int(query(dsn, f"SELECT count(*) FROM procrastinate_jobs WHERE task_name = '{task}'"
                          " AND status IN ('succeeded', 'failed')")[0][0])


def email(cluster: Cluster, folder: Path, readers: int) -> None:
    print(f"2. email: {readers} readers, 2 workers, one SIGKILLed mid-batch")
    dsn = new_database(cluster, "scale_email")
    run_dir = folder / "email"
    run_dir.mkdir()
    port = free_port()
    parent, child = multiprocessing.Pipe()
    sink = multiprocessing.Process(target=_serve_smtp, args=(port, child), daemon=True)
    sink.start()
    parent.recv()
    addresses = [f"lecteur{n:05d}@example.org" for n in range(readers)]
    (run_dir / "recipients.csv").write_text("email,name,topics\n" + "".join(f"{a},,\n" for a in addresses))
    feed = run_dir / "feed.xml"
    feed.write_bytes(rss(0, 5, NOW))
    config = write_config(
        run_dir, [feed.as_uri()],
        workers={"tick_seconds": 2, "email_batch": 500, "heartbeat_seconds": 1, "stalled_after_seconds": 6},
        delivery={"from_address": "lettre@techmatin.example.org", "smtp_host": "127.0.0.1", "smtp_port": port,
                  "security": "none", "rate": 0, "recipients": "recipients.csv",
                  "unsubscribe_url": "https://techmatin.example.org/desinscription?email={email}&token={token}"})
    env = worker_env(dsn, TECH_MATIN_UNSUBSCRIBE_SECRET=SECRET)
    workers = Workers(config, env)
    today = NOW.date()

    def sent() -> int:
        parent.send("count")
        return int(parent.recv())

    try:
        with Pipeline(*_loaded(config), store=StoreTarget(run_dir / "data", "postgresql", dsn),
                      output_dir=run_dir / "output") as app:
            app.run(today)
        from pipeline.worker import build_queue_app, install_queue_schema

        with Pipeline(*_loaded(config), store=StoreTarget(run_dir / "data", "postgresql", dsn),
                      output_dir=run_dir / "output") as app:
            queue = build_queue_app(dsn, lambda: app, 2)
            with queue.app.open():
                install_queue_schema(queue.app)
                queue.app.configure_task("queue_mailing").defer(date=today.isoformat())
        victim = workers.start("--queues", "email", name="victim")
        workers.start("--queues", "email,maintenance", name="survivor")
        started = time.monotonic()
        wait_for(lambda: sent() >= readers // 4, 1800, "a quarter of the messages", workers)
        running = query(dsn, "SELECT j.args->>'batch' FROM procrastinate_jobs j JOIN procrastinate_workers w"
                             " ON w.id = j.worker_id WHERE j.status = 'doing' AND j.task_name = 'send_batch'"
                             " AND w.id = (SELECT min(id) FROM procrastinate_workers)")
        victim.send_signal(signal.SIGKILL)
        print(f"   victim SIGKILLed after {sent()} messages, in the middle of batch(es) {[r[0] for r in running]}")

        def settled() -> bool:
            rows = query(dsn, f"SELECT count(*) FROM deliveries WHERE issue_date = '{today}'"
                              " AND (status = 'sent' OR handed_over IS NOT NULL)")
            return int(rows[0][0]) >= readers

        wait_for(settled, 3600, "every delivery sent or uncertain", workers)
        elapsed = time.monotonic() - started
    finally:
        workers.stop()
        parent.send("stop")
        by_recipient: dict[str, int] = parent.recv()
    with Pipeline(*_loaded(config), store=StoreTarget(run_dir / "data", "postgresql", dsn),
                  output_dir=run_dir / "output") as app:
        records = app.store.deliveries(today)
    uncertain = sorted((r.email, r.message_id) for r in records.values() if r.status is DeliveryStatus.SENDING)
    counts = Counter(by_recipient.get(a, 0) for a in addresses)
    retried = query(dsn, "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'send_batch' AND attempts > 1"
                         " AND status = 'succeeded'")
    print(f"   {elapsed:.1f} s, {readers / elapsed:.0f} messages/s; messages per reader: "
          f"{dict(sorted(counts.items()))}; batches retried after the kill: {retried[0][0]}")
    print(f"   uncertain (never resent): {uncertain or 'none'}")
    wrong = [a for a in addresses if by_recipient.get(a, 0) != 1 and a not in {e for e, _ in uncertain}]
    print(f"   exactly once: {'yes' if not wrong and len(uncertain) <= 1 else f'NO, {len(wrong)} readers wrong'}")


def slots(cluster: Cluster, folder: Path, feeds: int, seconds: float) -> None:
    print(f"3. periodic slots: 3 workers, {feeds} feeds, a 1-minute minimum interval, ticks every 10 s")
    dsn = new_database(cluster, "scale_slots")
    run_dir = folder / "slots"
    run_dir.mkdir()
    server = Feeds(feeds, 3, 0.05)
    config = write_config(run_dir, server.urls,
                          workers={"tick_seconds": 10, "min_fetch_interval": 1, "max_fetch_interval": 1,
                                   "heartbeat_seconds": 2, "stalled_after_seconds": 10},
                          schedule={"cron": "0 0 * * *", "timezone": "UTC"})
    workers = Workers(config, worker_env(dsn))
    started = time.monotonic()
    try:
        for number in range(3):
            workers.start("--queues", "schedule,feeds,build,maintenance", "--concurrency", "8", name=f"w{number}")
        time.sleep(seconds)
    finally:
        workers.stop()
        requests = server.requests()
    minutes = (time.monotonic() - started) / 60
    per_feed = Counter(requests.values())
    builds = query(dsn, "SELECT count(*) FROM runs WHERE kind = 'build'")[0][0]
    doubled = query(dsn, "SELECT count(*) FROM (SELECT 1 FROM procrastinate_jobs WHERE task_name = 'enqueue_due_feeds'"
                         " GROUP BY args->>'timestamp' HAVING count(*) > 1) AS d")[0][0]
    ticks = query(dsn, "SELECT count(DISTINCT args->>'timestamp') FROM procrastinate_jobs"
                       " WHERE task_name = 'enqueue_due_feeds'")[0][0]
    most = max(per_feed) if per_feed else 0
    print(f"   {minutes:.1f} min: fetches per feed {dict(sorted(per_feed.items()))} (at most "
          f"{int(minutes) + 1} allowed by a 1-minute interval: {'ok' if most <= int(minutes) + 1 else 'TOO MANY'});"
          f" builds of the day: {builds}; enqueue slots {ticks}, deferred twice {doubled}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--feeds", type=int, default=2000)
    parser.add_argument("--readers", type=int, default=20000)
    parser.add_argument("--slot-feeds", type=int, default=200)
    parser.add_argument("--slot-seconds", type=float, default=150, help="how long part 3 runs")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: fetch, email, slots")
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    bin_dir = find_pg_bin()
    if bin_dir is None:
        sys.exit("PostgreSQL is not installed (apt-get install postgresql)")
    # SIGTERM ends the run through the finally clauses: workers, servers and the cluster stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(f"stopped by signal {signum}"))
    cluster = Cluster.start(bin_dir)
    print("Shared 2-core machine: read the ratios and the correctness lines, not the absolute rates.")
    try:
        with tempfile.TemporaryDirectory(prefix="tech-matin-scale-") as temp:
            folder = Path(temp)
            if "fetch" not in skip:
                fetch_rounds(cluster, folder, args.feeds)
            if "email" not in skip:
                email(cluster, folder, args.readers)
            if "slots" not in skip:
                slots(cluster, folder, args.slot_feeds, args.slot_seconds)
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
