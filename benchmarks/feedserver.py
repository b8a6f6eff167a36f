"""A slow feed server for the benchmarks: feeds on loopback addresses, every answer delayed.

`FeedServer(bodies, hosts, latency)` serves `bodies[i]` at ``/feed{i}.xml`` on host
``i % hosts`` (127.0.0.2, 127.0.0.3, ...: Linux routes all of 127/8 to the loopback, so each
host is its own address, as outlets are distinct sites), in a process of its own so that its
work does not share the benchmark's GIL. Every answer, 304s included, waits `latency` seconds
first, as a distant server would. Each feed has an ETag and a Last-Modified; a conditional GET
that matches gets a 304.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from types import TracebackType

LAST_MODIFIED = "Mon, 05 May 2025 04:00:00 GMT"
MAX_HOSTS = 250  # 127.0.0.2 to 127.0.0.251


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # the default backlog of 5 would refuse a burst of connections


def _serve(bodies: Sequence[bytes], hosts: int, latency: float, content_type: str, ready: Connection) -> None:
    etags = [f'"{hashlib.sha256(body).hexdigest()[:16]}"' for body in bodies]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            time.sleep(latency)
            try:
                index = int(self.path.strip("/").removesuffix(".xml").removeprefix("feed"))
                body = bodies[index]
            except (ValueError, IndexError):
                self.send_error(404)
                return
            if self.headers.get("If-None-Match") == etags[index] or (
                    "If-None-Match" not in self.headers and self.headers.get("If-Modified-Since") == LAST_MODIFIED):
                self.send_response(304)
                self.send_header("ETag", etags[index])
                self.send_header("Last-Modified", LAST_MODIFIED)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("ETag", etags[index])
            self.send_header("Last-Modified", LAST_MODIFIED)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    servers = [_Server((f"127.0.0.{k + 2}", 0), Handler) for k in range(hosts)]
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    ready.send([f"{host}:{port}" for host, port in (srv.server_address[:2] for srv in servers)])
    servers[0].serve_forever()


class FeedServer:
    """The server process; `urls[i]` is the address of `bodies[i]`. A context manager."""

    def __init__(self, bodies: Sequence[bytes], hosts: int, latency: float,
                 content_type: str = "application/xml") -> None:
        if not 1 <= hosts <= MAX_HOSTS:
            raise ValueError(f"hosts must be from 1 to {MAX_HOSTS}")
        receiver, sender = multiprocessing.Pipe(duplex=False)
        self._process = multiprocessing.get_context("fork").Process(
            target=_serve, args=(bodies, hosts, latency, content_type, sender), daemon=True)
        self._process.start()
        addresses = receiver.recv()
        self.urls = [f"http://{addresses[i % hosts]}/feed{i}.xml" for i in range(len(bodies))]

    def close(self) -> None:
        self._process.terminate()
        self._process.join()

    def __enter__(self) -> FeedServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
