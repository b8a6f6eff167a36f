"""Real parts for the distributed mode's tests and benchmarks/scale.py: feeds served over HTTP on
loopback addresses (one host each if asked: 127.0.0.2, 127.0.0.3…), an SMTP sink counting
messages by recipient, and `pipeline worker` processes started as a user starts them.

Nothing here leaves 127.0.0.0/8. Every wait has a deadline and fails loudly when it passes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import yaml
from aiosmtpd.controller import Controller

REPO = Path(__file__).resolve().parents[1]


def rss(feed: int, items: int, now: dt.datetime) -> bytes:
    """A small French RSS feed whose items are dated in the hours before `now`."""
    entries = "".join(
        f"<item><title>Le RGPD et la CNIL, note {feed}-{n}</title><link>https://example.org/{feed}/{n}</link>"
        f"<guid>f{feed}-{n}</guid><pubDate>{format_datetime(now - dt.timedelta(hours=n + 1))}</pubDate>"
        f"<description>La CNIL publie une recommandation sur le RGPD ({feed}, {n}).</description></item>"
        for n in range(items))
    return (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Flux {feed}</title>'
            f"<link>https://example.org/{feed}</link><description>Test</description>{entries}</channel></rss>"
            ).encode()


class FeedServer:
    """HTTP on the given loopback addresses (one listening socket each, one event loop thread):
    GET /feed/N.xml answers feed N after `latency` seconds. Counts requests by (host, path)."""

    def __init__(self, hosts: list[str], bodies: Callable[[int], bytes], latency: float = 0.0):
        self.hosts, self.bodies, self.latency = hosts, bodies, latency
        self.requests: Counter[tuple[str, str]] = Counter()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> FeedServer:
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError("the feed server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._answer, host=self.hosts[0], port=0))
        self.port = server.sockets[0].getsockname()[1]
        for host in self.hosts[1:]:
            self._loop.run_until_complete(asyncio.start_server(self._answer, host=host, port=self.port))
        self._ready.set()
        self._loop.run_forever()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await reader.readline()
                if not request:
                    return
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                path = request.split()[1].decode()
                host = writer.get_extra_info("sockname")[0]
                self.requests[(host, path)] += 1
                await asyncio.sleep(self.latency)
                number = int(path.rsplit("/", 1)[-1].split(".")[0]) if path.startswith("/feed/") else -1
                body = self.bodies(number) if number >= 0 else b""
                status = b"200 OK" if body else b"404 Not Found"
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: application/rss+xml\r\nContent-Length: "
                             + str(len(body)).encode() + b"\r\n\r\n" + body)
                await writer.drain()
        except (ConnectionError, IndexError, ValueError):
            return
        finally:
            writer.close()


class CountingInbox:
    """aiosmtpd handler: every message, counted by recipient; `delay` seconds before each answer."""

    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.by_recipient: Counter[str] = Counter()
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(self.delay)
        with self.lock:
            self.by_recipient.update(envelope.rcpt_tos)
        return "250 2.0.0 Ok: queued"

    @property
    def total(self) -> int:
        with self.lock:
            return sum(self.by_recipient.values())


@dataclass
class SmtpSink:
    inbox: CountingInbox
    controller: Controller
    port: int

    @classmethod
    def start(cls, port: int, delay: float = 0.0) -> SmtpSink:
        inbox = CountingInbox(delay)
        controller = Controller(inbox, hostname="127.0.0.1", port=port)
        controller.start()
        return cls(inbox, controller, port)

    def stop(self) -> None:
        self.controller.stop()


@dataclass
class Workers:
    """`pipeline worker` processes (or `pipeline schedule`), each with its own log file."""

    config: Path
    env: dict[str, str]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, *args: str, name: str = "worker", command: str = "worker") -> subprocess.Popen[bytes]:
        log = open(self.config.parent / f"{name}-{len(self.processes)}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline", command, "--config", str(self.config), "--topics",
             str(REPO / "topics.yaml"), *args, *(["--name", name] if command == "worker" else [])],
            cwd=self.config.parent, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def logs(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in sorted(self.config.parent.glob("*.log")))


def wait_for(condition: Callable[[], bool], seconds: float, what: str, workers: Workers | None = None) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {seconds:g} s" +
                                 (f"\n--- workers' logs ---\n{workers.logs()[-4000:]}" if workers else ""))
        time.sleep(0.1)


def write_config(folder: Path, feed_urls: list[str], *, workers: dict[str, Any] | None = None,
                 delivery: dict[str, Any] | None = None, schedule: dict[str, Any] | None = None,
                 fetch: dict[str, Any] | None = None) -> Path:
    """A sources.yaml of the distributed mode (storage.backend: postgresql)."""
    data: dict[str, Any] = {
        "newsletter": {"name": "Tech Matin", "base_url": "https://techmatin.example.org/"},
        "storage": {"backend": "postgresql", "db": "data/locks", "output": "output"},
        "fetch": {"connect_timeout": 10, "read_timeout": 10, "deadline": 30, **(fetch or {})},
        "feeds": [{"id": f"f{n}", "name": f"Flux {n}", "url": url} for n, url in enumerate(feed_urls)],
    }
    if workers:
        data["workers"] = workers
    if schedule:
        data["schedule"] = schedule
    if delivery:
        data["delivery"] = delivery
    config = folder / "sources.yaml"
    config.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return config


def worker_env(dsn: str, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TECH_MATIN_")}
    return {**env, "TECH_MATIN_DATABASE_URL": dsn, "PYTHONUNBUFFERED": "1", **extra}
