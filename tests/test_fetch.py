"""Fetch stage against real HTTP servers on 127.0.0.1.

Two kinds of server: pytest-httpserver (werkzeug) for ordinary answers, and a small threaded
`http.server` for what werkzeug cannot do on purpose: stalling, closing mid-body, streaming
50 MB, counting simultaneous requests.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import io
import socket
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from rich.console import Console
from werkzeug import Request, Response

from pipeline.fetch import fetch_feeds
from pipeline.fetchreport import FetchProgress, progress_console, render_fetch_table
from pipeline.models import FeedSource, FeedState, FetchResult, FetchSettings, FetchStatus
from pipeline.parse import parse_feed

# Small timeouts keep every test within a few seconds; retries start fast (0.25-0.5 s backoff).
FAST = FetchSettings(connect_timeout=2, read_timeout=2, deadline=5, max_tries=3)
SEEN_AT = dt.datetime(2025, 5, 20, 6, 0, tzinfo=dt.UTC)

RSS = b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Exemple</title><link>https://example.org/</link>
<item><title>RGPD : la CNIL sanctionne</title><link>https://example.org/a</link>
<guid>https://example.org/a</guid><description>Une amende.</description></item>
</channel></rss>
"""


def feed(url: str, feed_id: str = "f1", **kwargs: object) -> FeedSource:
    return FeedSource(id=feed_id, name=feed_id.upper(), url=url, **kwargs)  # type: ignore[arg-type]


def fetch_one(url: str, settings: FetchSettings = FAST, state: FeedState | None = None) -> FetchResult:
    source = feed(url)
    states = {source.id: state} if state is not None else {}
    [result] = fetch_feeds([source], settings, states)
    return result


# ---------------------------------------------------------------- servers


@pytest.fixture(scope="module")
def werkzeug_server() -> Iterator[HTTPServer]:
    # Our own instance on 127.0.0.1 (threaded), so other test modules' httpserver is untouched.
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()


@pytest.fixture
def httpserver(werkzeug_server: HTTPServer) -> Iterator[HTTPServer]:
    werkzeug_server.clear()
    yield werkzeug_server
    werkzeug_server.clear()


Route = Callable[[BaseHTTPRequestHandler, "RawServer"], None]


@dataclass
class RawServer:
    """A threaded http.server whose routes are plain functions writing to the socket."""

    routes: dict[str, Route] = field(default_factory=dict)
    release: threading.Event = field(default_factory=threading.Event)  # ends stalls at teardown
    lock: threading.Lock = field(default_factory=threading.Lock)
    hits: dict[str, int] = field(default_factory=dict)
    active: int = 0
    max_active: int = 0
    bytes_sent: int = 0
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def raw_server() -> Iterator[RawServer]:
    state = RawServer()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            with state.lock:
                state.hits[path] = state.hits.get(path, 0) + 1
            route = state.routes.get(path)
            if route is None:
                self.send_error(404)
                return
            route(self, state)

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep test output clean

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    state.release.set()
    server.shutdown()
    server.server_close()


def send_feed(handler: BaseHTTPRequestHandler, body: bytes = RSS, status: int = 200) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", "application/rss+xml; charset=utf-8")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


# ---------------------------------------------------------------- plain answers


def test_200_returns_raw_body_and_http_metadata(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed.xml").respond_with_data(
        RSS,
        content_type="application/rss+xml; charset=utf-8",
        headers={"ETag": '"v1"', "Last-Modified": "Tue, 20 May 2025 05:00:00 GMT"},
    )
    result = fetch_one(httpserver.url_for("/feed.xml"))

    assert result.status is FetchStatus.NEW
    assert result.body == RSS
    assert result.content_type == "application/rss+xml; charset=utf-8"
    assert result.etag == '"v1"'
    assert result.last_modified == "Tue, 20 May 2025 05:00:00 GMT"
    assert result.http_status == 200
    assert result.final_url == result.url == httpserver.url_for("/feed.xml")
    assert result.error is None and result.permanent_redirect is None and not result.truncated
    assert 0 < result.elapsed < 5
    [(request, _)] = httpserver.log
    assert request.headers["User-Agent"] == FAST.user_agent
    assert "application/rss+xml" in request.headers["Accept"]
    assert request.headers["Accept-Encoding"] == "gzip, deflate"
    assert "If-None-Match" not in request.headers


def test_304_after_etag_sends_if_none_match(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed.xml", headers={"If-None-Match": '"v1"'}).respond_with_data("", status=304)
    httpserver.expect_request("/feed.xml").respond_with_data(RSS)  # if the header were missing
    result = fetch_one(httpserver.url_for("/feed.xml"), state=FeedState("f1", etag='"v1"'))

    assert result.status is FetchStatus.UNCHANGED
    assert result.body is None
    assert result.http_status == 304
    assert result.etag == '"v1"'  # kept for the next run even though the 304 did not repeat it


def test_304_after_last_modified_sends_if_modified_since(httpserver: HTTPServer) -> None:
    stamp = "Tue, 20 May 2025 05:00:00 GMT"
    httpserver.expect_request("/feed.xml", headers={"If-Modified-Since": stamp}).respond_with_data("", status=304)
    httpserver.expect_request("/feed.xml").respond_with_data(RSS)
    result = fetch_one(httpserver.url_for("/feed.xml"), state=FeedState("f1", last_modified=stamp))

    assert result.status is FetchStatus.UNCHANGED
    assert result.body is None
    assert result.last_modified == stamp


def test_non_ascii_validator_is_not_sent(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed.xml").respond_with_data(RSS, headers={"ETag": '"v2"'})
    result = fetch_one(httpserver.url_for("/feed.xml"), state=FeedState("f1", etag='"été"'))

    assert result.status is FetchStatus.NEW  # a full download, not a crash on the header
    assert result.etag == '"v2"'
    [(request, _)] = httpserver.log
    assert "If-None-Match" not in request.headers


def test_state_url_from_an_earlier_permanent_redirect_is_used(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/new.xml").respond_with_data(RSS)
    moved_to = httpserver.url_for("/new.xml")
    result = fetch_one(httpserver.url_for("/old.xml"), state=FeedState("f1", url=moved_to))

    assert result.status is FetchStatus.NEW
    assert result.url == moved_to
    assert [req.path for req, _ in httpserver.log] == ["/new.xml"]


# ---------------------------------------------------------------- redirects


@pytest.mark.parametrize("code", [301, 308])
def test_permanent_redirect_reports_moved_with_body(httpserver: HTTPServer, code: int) -> None:
    httpserver.expect_request("/old.xml").respond_with_data("", status=code, headers={"Location": "/new.xml"})
    httpserver.expect_request("/new.xml").respond_with_data(RSS, content_type="application/rss+xml")
    result = fetch_one(httpserver.url_for("/old.xml"))

    assert result.status is FetchStatus.MOVED
    assert result.permanent_redirect == httpserver.url_for("/new.xml")
    assert result.final_url == httpserver.url_for("/new.xml")
    assert result.url == httpserver.url_for("/old.xml")
    assert result.body == RSS
    assert parse_feed(result, SEEN_AT).items  # the body is usable


def test_permanent_redirect_then_304_keeps_the_new_url(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/old.xml").respond_with_data("", status=301, headers={"Location": "/new.xml"})
    httpserver.expect_request("/new.xml", headers={"If-None-Match": '"v1"'}).respond_with_data("", status=304)
    result = fetch_one(httpserver.url_for("/old.xml"), state=FeedState("f1", etag='"v1"'))

    assert result.status is FetchStatus.UNCHANGED
    assert result.body is None
    assert result.permanent_redirect == httpserver.url_for("/new.xml")


@pytest.mark.parametrize("code", [302, 307])
def test_temporary_redirect_is_followed_but_not_remembered(httpserver: HTTPServer, code: int) -> None:
    httpserver.expect_request("/feed").respond_with_data("", status=code, headers={"Location": "/today.xml"})
    httpserver.expect_request("/today.xml").respond_with_data(RSS)
    result = fetch_one(httpserver.url_for("/feed"))

    assert result.status is FetchStatus.NEW
    assert result.permanent_redirect is None
    assert result.final_url == httpserver.url_for("/today.xml")
    assert result.body == RSS


def test_permanent_then_temporary_remembers_only_the_permanent_part(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/a").respond_with_data("", status=301, headers={"Location": "/b"})
    httpserver.expect_request("/b").respond_with_data("", status=302, headers={"Location": "/c"})
    httpserver.expect_request("/c").respond_with_data(RSS)
    result = fetch_one(httpserver.url_for("/a"))

    assert result.status is FetchStatus.MOVED
    assert result.permanent_redirect == httpserver.url_for("/b")
    assert result.final_url == httpserver.url_for("/c")


def test_redirect_loop_fails(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/a").respond_with_data("", status=301, headers={"Location": "/b"})
    httpserver.expect_request("/b").respond_with_data("", status=302, headers={"Location": "/a"})
    result = fetch_one(httpserver.url_for("/a"))

    assert result.status is FetchStatus.FAILED
    assert result.error == "redirect loop"
    assert result.body is None and result.permanent_redirect is None
    assert len(httpserver.log) == 2  # not retried: a loop does not fix itself


def test_too_many_redirects_fails(httpserver: HTTPServer) -> None:
    for hop in range(8):
        httpserver.expect_request(f"/r{hop}").respond_with_data("", status=302, headers={"Location": f"/r{hop + 1}"})
    result = fetch_one(httpserver.url_for("/r0"), FetchSettings(max_redirects=5, deadline=5))

    assert result.status is FetchStatus.FAILED
    assert result.error == "too many redirects (>5)"
    assert len(httpserver.log) == 6


@pytest.mark.parametrize("location", ["mailto:webmaster@example.org", "javascript:alert(1)", "about:blank",
                                      "data:text/plain,hello", "ftp://example.org/feed.xml"])
def test_redirect_to_a_non_http_url_fails_that_feed_alone(httpserver: HTTPServer, location: str) -> None:
    # httpx raises InvalidURL (not an HTTPError) on the first four: it once ended the whole run.
    httpserver.expect_request("/moved").respond_with_data("", status=302, headers={"Location": location})
    httpserver.expect_request("/feed.xml").respond_with_data(RSS)
    bad, good = fetch_feeds([feed(httpserver.url_for("/moved"), "bad"), feed(httpserver.url_for("/feed.xml"), "ok")],
                            FAST, {})

    assert bad.status is FetchStatus.FAILED
    assert bad.error == f"redirect to a non-HTTP URL: {location}"
    assert bad.body is None and bad.permanent_redirect is None
    assert good.status is FetchStatus.NEW and good.body == RSS
    assert [entry[0].path for entry in httpserver.log].count("/moved") == 1  # not retried


def test_redirect_to_an_unparsable_url_fails_without_retrying(raw_server: RawServer) -> None:
    def moved(handler: BaseHTTPRequestHandler, server: RawServer) -> None:
        handler.send_response(301)
        handler.send_header("Location", "http://[::1/feed")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    raw_server.routes["/moved"] = moved
    result = fetch_one(raw_server.url("/moved"))

    assert result.status is FetchStatus.FAILED
    assert result.error == "redirect to an invalid URL: http://[::1/feed"
    assert raw_server.hits["/moved"] == 1  # a broken Location does not mend itself: no retry


def test_any_exception_of_one_feed_fails_that_feed_alone(httpserver: HTTPServer, tmp_path: Path) -> None:
    # A NUL byte in a file: URL makes open() raise ValueError, which no except clause of the
    # fetch stage names: the per-feed boundary turns it into that feed's one-line failure.
    httpserver.expect_request("/feed.xml").respond_with_data(RSS)
    strange = (tmp_path / "a\0b.xml").as_uri()
    bad, good = fetch_feeds([feed(strange, "bad"), feed(httpserver.url_for("/feed.xml"), "ok")], FAST, {})

    assert bad.status is FetchStatus.FAILED
    assert bad.error is not None and bad.error.startswith("unexpected error: ValueError: ")
    assert "\n" not in bad.error
    assert good.status is FetchStatus.NEW


# ---------------------------------------------------------------- errors and retries


def test_404_is_a_one_line_reason_and_not_retried(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/gone.xml").respond_with_data("nope", status=404)
    result = fetch_one(httpserver.url_for("/gone.xml"))

    assert result.status is FetchStatus.FAILED
    assert result.error == "HTTP 404 Not Found"
    assert result.http_status == 404
    assert result.body is None
    assert len(httpserver.log) == 1


def test_500_then_200_is_retried(httpserver: HTTPServer) -> None:
    httpserver.expect_ordered_request("/feed.xml").respond_with_data("oops", status=500)
    httpserver.expect_ordered_request("/feed.xml").respond_with_data(RSS)
    result = fetch_one(httpserver.url_for("/feed.xml"))

    assert result.status is FetchStatus.NEW
    assert result.body == RSS
    assert result.error is None
    assert len(httpserver.log) == 2


def test_5xx_gives_up_after_max_tries(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed.xml").respond_with_data("down", status=503)
    result = fetch_one(httpserver.url_for("/feed.xml"), FetchSettings(max_tries=3, deadline=10))

    assert result.status is FetchStatus.FAILED
    assert result.error == "HTTP 503 Service Unavailable (after 3 tries)"
    assert len(httpserver.log) == 3


def test_retries_stop_at_the_deadline(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed.xml").respond_with_data("down", status=500)
    started = time.monotonic()
    result = fetch_one(httpserver.url_for("/feed.xml"), FetchSettings(max_tries=50, deadline=1.5))

    assert result.status is FetchStatus.FAILED
    assert result.error is not None and result.error.startswith("HTTP 500 Internal Server Error (after")
    # Without the deadline, 50 tries with exponential backoff would take minutes; the slack above
    # 1.5 s only absorbs a loaded machine (this failed once at load 7 with a 3 s bound).
    assert time.monotonic() - started < 10
    assert 2 <= len(httpserver.log) < 50


def test_429_retry_after_seconds_is_honoured(httpserver: HTTPServer) -> None:
    times: list[float] = []

    def limited(request: Request) -> Response:
        times.append(time.monotonic())
        if len(times) == 1:
            return Response("slow down", status=429, headers={"Retry-After": "1"})
        return Response(RSS, status=200, content_type="application/rss+xml")

    httpserver.expect_request("/feed.xml").respond_with_handler(limited)
    result = fetch_one(httpserver.url_for("/feed.xml"))

    assert result.status is FetchStatus.NEW
    assert len(times) == 2
    assert times[1] - times[0] >= 0.95  # our own backoff alone would have been ~0.25-0.5 s
    assert result.elapsed >= 0.95


def test_429_retry_after_http_date_is_honoured(httpserver: HTTPServer) -> None:
    times: list[float] = []

    def limited(request: Request) -> Response:
        times.append(time.monotonic())
        if len(times) == 1:
            # HTTP dates have whole seconds: "now + 2 s" means a wait of 1 to 2 s.
            when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
            return Response("busy", status=429, headers={"Retry-After": format_datetime(when, usegmt=True)})
        return Response(RSS, status=200)

    httpserver.expect_request("/feed.xml").respond_with_handler(limited)
    result = fetch_one(httpserver.url_for("/feed.xml"))

    assert result.status is FetchStatus.NEW
    assert len(times) == 2
    assert times[1] - times[0] >= 0.9


def test_retry_after_date_beyond_the_deadline_fails_at_once(httpserver: HTTPServer) -> None:
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    httpserver.expect_request("/feed.xml").respond_with_data("busy", status=429, headers={"Retry-After": later})
    started = time.monotonic()
    result = fetch_one(httpserver.url_for("/feed.xml"), FetchSettings(deadline=5))

    assert result.status is FetchStatus.FAILED
    assert result.error is not None
    assert result.error.startswith("HTTP 429 Too Many Requests; server asked to retry after")
    assert "deadline" in result.error
    assert len(httpserver.log) == 1
    assert time.monotonic() - started < 2


def test_connection_refused() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago and has no listener
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = fetch_one(f"http://127.0.0.1:{port}/feed.xml", FetchSettings(max_tries=2, deadline=5))

    assert result.status is FetchStatus.FAILED
    assert result.error == "connection refused (after 2 tries)"


def test_connection_closed_mid_body_fails_and_is_retried(raw_server: RawServer) -> None:
    def cut(handler: BaseHTTPRequestHandler, server: RawServer) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/rss+xml")
        handler.send_header("Content-Length", "5000")
        handler.end_headers()
        handler.wfile.write(RSS[:100])
        handler.wfile.flush()
        handler.close_connection = True
        handler.connection.shutdown(socket.SHUT_RDWR)

    raw_server.routes["/cut.xml"] = cut
    result = fetch_one(raw_server.url("/cut.xml"), FetchSettings(max_tries=2, deadline=5))

    assert result.status is FetchStatus.FAILED
    assert result.error == "connection closed mid-body after 100 bytes (after 2 tries)"
    assert result.body is None
    assert raw_server.hits["/cut.xml"] == 2


# ---------------------------------------------------------------- deadlines


def test_stalled_feed_times_out_while_others_succeed(raw_server: RawServer) -> None:
    def stall(handler: BaseHTTPRequestHandler, server: RawServer) -> None:
        server.release.wait(10)  # never answers within the test

    def fine(handler: BaseHTTPRequestHandler, server: RawServer) -> None:
        send_feed(handler)

    raw_server.routes["/stall.xml"] = stall
    raw_server.routes["/fine.xml"] = fine
    settings = FetchSettings(connect_timeout=1, read_timeout=10, deadline=1.5, per_host=8)
    feeds = [feed(raw_server.url("/stall.xml"), "stall")] + [
        feed(raw_server.url("/fine.xml"), f"ok{i}") for i in range(5)
    ]
    started = time.monotonic()
    results = fetch_feeds(feeds, settings, {})
    total = time.monotonic() - started

    assert [r.feed.id for r in results] == [f.id for f in feeds]
    stalled, *others = results
    assert stalled.status is FetchStatus.FAILED
    assert stalled.error == "timed out after 1.5 s"
    assert all(r.status is FetchStatus.NEW and r.body == RSS for r in others)
    assert all(r.elapsed < 1.0 for r in others)
    assert total < 1.5 + 1.5  # about the deadline, not the stall (10 s) nor the read timeout


def test_read_timeout_when_body_stalls(raw_server: RawServer) -> None:
    def trickle(handler: BaseHTTPRequestHandler, server: RawServer) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        handler.wfile.write(b"<rss>")
        handler.wfile.flush()
        server.release.wait(10)

    raw_server.routes["/trickle.xml"] = trickle
    result = fetch_one(raw_server.url("/trickle.xml"), FetchSettings(read_timeout=0.5, deadline=4, max_tries=1))

    assert result.status is FetchStatus.FAILED
    assert result.error == "no data for 0.5 s (read timeout)"


# ---------------------------------------------------------------- size cap and encodings


def test_50_mb_streamed_body_is_cut_at_the_cap(raw_server: RawServer) -> None:
    chunk = b"<item>" + b"x" * (64 * 1024 - 13) + b"</item>"

    def huge(handler: BaseHTTPRequestHandler, server: RawServer) -> None:
        # No Content-Length: the size is only learnt by reading.
        handler.send_response(200)
        handler.send_header("Content-Type", "application/rss+xml")
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.close_connection = True
        try:
            for _ in range(50 * 1024 * 1024 // len(chunk)):
                handler.wfile.write(chunk)
                with server.lock:
                    server.bytes_sent += len(chunk)
        except OSError:
            pass  # the client hung up, as it should

    raw_server.routes["/huge.xml"] = huge
    tracemalloc.start()
    try:
        result = fetch_one(raw_server.url("/huge.xml"), FetchSettings(deadline=20))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert result.status is FetchStatus.FAILED
    assert result.error == "body over 10 MB cap"
    assert result.truncated
    assert result.body is None or len(result.body) <= 10 * 1024 * 1024
    assert peak < 35 * 1024 * 1024  # well under the 50 MB the server offered
    assert raw_server.bytes_sent < 40 * 1024 * 1024  # we stopped reading, the server noticed


def test_declared_oversize_body_is_refused_without_reading(raw_server: RawServer) -> None:
    def announced(handler: BaseHTTPRequestHandler, server: RawServer) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(50 * 1024 * 1024))
        handler.end_headers()
        server.release.wait(10)  # would time out if the client waited for the body

    raw_server.routes["/big.xml"] = announced
    result = fetch_one(raw_server.url("/big.xml"), FetchSettings(max_bytes=1024 * 1024, deadline=3))

    assert result.status is FetchStatus.FAILED
    assert result.error == "body over 1 MB cap"
    assert result.truncated


def test_gzip_body_is_decompressed(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed.xml").respond_with_data(
        gzip.compress(RSS), headers={"Content-Encoding": "gzip"}, content_type="application/rss+xml"
    )
    result = fetch_one(httpserver.url_for("/feed.xml"))

    assert result.status is FetchStatus.NEW
    assert result.body == RSS


@pytest.mark.parametrize("wbits", [zlib.MAX_WBITS, -zlib.MAX_WBITS], ids=["zlib", "raw"])
def test_deflate_body_is_decompressed_both_flavours(httpserver: HTTPServer, wbits: int) -> None:
    packer = zlib.compressobj(wbits=wbits)
    httpserver.expect_request("/feed.xml").respond_with_data(
        packer.compress(RSS) + packer.flush(), headers={"Content-Encoding": "deflate"}
    )
    assert fetch_one(httpserver.url_for("/feed.xml")).body == RSS


def test_gzip_bomb_stops_at_the_cap(httpserver: HTTPServer) -> None:
    bomb = gzip.compress(b"\0" * (30 * 1024 * 1024))  # ~30 KB on the wire
    httpserver.expect_request("/bomb.xml").respond_with_data(bomb, headers={"Content-Encoding": "gzip"})
    result = fetch_one(httpserver.url_for("/bomb.xml"), FetchSettings(max_bytes=1024 * 1024))

    assert result.status is FetchStatus.FAILED
    assert result.error == "body over 1 MB cap"
    assert result.truncated and result.body is None


def test_latin1_declared_only_in_content_type(httpserver: HTTPServer) -> None:
    body = (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>Économie</title>'
        "<item><title>Données personnelles : la CNIL s'inquiète</title>"
        "<link>https://example.org/a</link></item></channel></rss>"
    ).encode("iso-8859-1")
    httpserver.expect_request("/feed.xml").respond_with_data(
        body, content_type="application/rss+xml; charset=ISO-8859-1"
    )
    result = fetch_one(httpserver.url_for("/feed.xml"))

    assert result.body == body  # raw bytes, not decoded here
    assert result.content_type == "application/rss+xml; charset=ISO-8859-1"
    parsed = parse_feed(result, SEEN_AT)
    assert parsed.error is None
    assert [item.title for item in parsed.items] == ["Données personnelles : la CNIL s'inquiète"]


def test_latin1_declared_only_in_xml_declaration(httpserver: HTTPServer) -> None:
    body = (
        '<?xml version="1.0" encoding="ISO-8859-1"?><rss version="2.0"><channel><title>Économie</title>'
        "<item><title>Règlement européen sur l'IA : été décisif</title>"
        "<link>https://example.org/a</link></item></channel></rss>"
    ).encode("iso-8859-1")
    httpserver.expect_request("/feed.xml").respond_with_data(body, content_type="application/rss+xml")
    result = fetch_one(httpserver.url_for("/feed.xml"))

    assert result.content_type == "application/rss+xml"
    parsed = parse_feed(result, SEEN_AT)
    assert parsed.error is None
    assert [item.title for item in parsed.items] == ["Règlement européen sur l'IA : été décisif"]


def test_html_page_is_fetched_and_parse_says_not_a_feed(httpserver: HTTPServer) -> None:
    page = b"<!DOCTYPE html><html><head><title>Accueil</title></head><body><p>Bienvenue</p></body></html>"
    httpserver.expect_request("/rss").respond_with_data(page, content_type="text/html; charset=utf-8")
    result = fetch_one(httpserver.url_for("/rss"))

    assert result.status is FetchStatus.NEW  # fetching worked; judging the content is parse's job
    assert result.content_type == "text/html; charset=utf-8"
    assert parse_feed(result, SEEN_AT).error == "not a feed: got text/html"


def test_empty_200(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed.xml").respond_with_data(b"", content_type="application/rss+xml")
    result = fetch_one(httpserver.url_for("/feed.xml"))

    assert result.status is FetchStatus.NEW
    assert result.body == b""
    assert parse_feed(result, SEEN_AT).error == "not a feed: empty body"


# ---------------------------------------------------------------- skipping and files


def test_feed_over_the_failure_threshold_is_skipped_without_a_request(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed.xml").respond_with_data(RSS)
    source = feed(httpserver.url_for("/feed.xml"), "lemonde")
    state = FeedState("lemonde", consecutive_failures=10)
    [result] = fetch_feeds([source], FetchSettings(failure_threshold=10), {"lemonde": state})

    assert result.status is FetchStatus.SKIPPED
    assert result.error == (
        "skipped after 10 consecutive failures; re-enable with `pipeline feeds enable lemonde` "
        "or `pipeline run --retry-failed`"
    )
    assert httpserver.log == []

    # Below the threshold, or with the threshold off (--retry-failed), it is fetched again.
    [below] = fetch_feeds([source], FetchSettings(failure_threshold=11), {"lemonde": state})
    [forced] = fetch_feeds([source], FetchSettings(failure_threshold=0), {"lemonde": state})
    assert below.status is forced.status is FetchStatus.NEW


def test_disabled_feeds_are_skipped(httpserver: HTTPServer) -> None:
    url = httpserver.url_for("/feed.xml")
    off_in_config = feed(url, "a", enabled=False)
    off_in_store = feed(url, "b")
    results = fetch_feeds([off_in_config, off_in_store], FAST, {"b": FeedState("b", disabled=True)})

    assert [r.status for r in results] == [FetchStatus.SKIPPED, FetchStatus.SKIPPED]
    assert results[0].error == "disabled in sources.yaml (enabled: false)"
    assert results[1].error is not None and "pipeline feeds enable b" in results[1].error
    assert httpserver.log == []


def test_file_url_reads_the_local_file(tmp_path: Path) -> None:
    path = tmp_path / "démo feed.xml"
    path.write_bytes(RSS)
    result = fetch_one(path.as_uri())

    assert result.status is FetchStatus.NEW
    assert result.body == RSS
    assert result.content_type == "application/xml"
    assert parse_feed(result, SEEN_AT).items


def test_missing_file_fails_with_its_path(tmp_path: Path) -> None:
    missing = tmp_path / "absent.xml"
    result = fetch_one(missing.as_uri())

    assert result.status is FetchStatus.FAILED
    assert result.error == f"file not found: {missing}"


def test_file_over_the_cap_fails(tmp_path: Path) -> None:
    path = tmp_path / "big.xml"
    path.write_bytes(b"x" * 2048)
    result = fetch_one(path.as_uri(), FetchSettings(max_bytes=1024))

    assert result.status is FetchStatus.FAILED
    assert result.error == "body over 1 KB cap"
    assert result.truncated and result.body is None


# ---------------------------------------------------------------- concurrency


def _counting_route(hold: float) -> Route:
    def route(handler: BaseHTTPRequestHandler, server: RawServer) -> None:
        with server.lock:
            server.active += 1
            server.max_active = max(server.max_active, server.active)
        try:
            time.sleep(hold)
            send_feed(handler)
        finally:
            with server.lock:
                server.active -= 1

    return route


def test_global_concurrency_bound_is_respected(raw_server: RawServer) -> None:
    raw_server.routes["/count.xml"] = _counting_route(0.2)
    feeds = [feed(raw_server.url("/count.xml"), f"f{i}") for i in range(12)]
    results = fetch_feeds(feeds, FetchSettings(concurrency=3, per_host=10, deadline=10), {})

    assert all(r.status is FetchStatus.NEW for r in results)
    assert raw_server.hits["/count.xml"] == 12
    assert raw_server.max_active == 3  # never more, and it did run feeds in parallel


def test_per_host_bound_is_respected(raw_server: RawServer) -> None:
    raw_server.routes["/count.xml"] = _counting_route(0.2)
    feeds = [feed(raw_server.url("/count.xml"), f"f{i}") for i in range(8)]
    results = fetch_feeds(feeds, FetchSettings(concurrency=16, per_host=2, deadline=10), {})

    assert all(r.status is FetchStatus.NEW for r in results)
    assert raw_server.max_active == 2


def test_results_keep_feed_order_and_on_result_sees_each_once(httpserver: HTTPServer, tmp_path: Path) -> None:
    httpserver.expect_request("/feed.xml").respond_with_data(RSS)
    httpserver.expect_request("/404").respond_with_data("", status=404)
    feeds = [
        feed(httpserver.url_for("/404"), "a"),
        feed((tmp_path / "none.xml").as_uri(), "b"),
        feed(httpserver.url_for("/feed.xml"), "c"),
        feed(httpserver.url_for("/feed.xml"), "d", enabled=False),
    ]
    seen: list[str] = []
    results = fetch_feeds(feeds, FAST, {}, on_result=lambda r: seen.append(r.feed.id))

    assert [r.feed.id for r in results] == ["a", "b", "c", "d"]
    assert [r.status for r in results] == [
        FetchStatus.FAILED,
        FetchStatus.FAILED,
        FetchStatus.NEW,
        FetchStatus.SKIPPED,
    ]
    assert sorted(seen) == ["a", "b", "c", "d"]


def test_works_when_called_from_a_running_event_loop(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed.xml").respond_with_data(RSS)

    async def inside_a_loop() -> list[FetchResult]:
        return fetch_feeds([feed(httpserver.url_for("/feed.xml"))], FAST, {})

    [result] = asyncio.run(inside_a_loop())
    assert result.status is FetchStatus.NEW


# ---------------------------------------------------------------- the report


def _results() -> list[FetchResult]:
    return [
        FetchResult(feed("https://a.example/rss", "a"), FetchStatus.NEW, "https://a.example/rss", elapsed=0.42),
        FetchResult(feed("https://b.example/rss", "b"), FetchStatus.UNCHANGED, "https://b.example/rss", elapsed=0.1),
        FetchResult(
            FeedSource("c", "Le [bold]Monde[/bold]", "https://c.example/rss"),
            FetchStatus.FAILED,
            "https://c.example/rss",
            error="HTTP 404 Not Found",
            elapsed=1.26,
        ),
        FetchResult(
            feed("https://d.example/old", "d"),
            FetchStatus.MOVED,
            "https://d.example/old",
            permanent_redirect="https://d.example/new",
            elapsed=0.3,
        ),
        FetchResult(
            feed("https://e.example/rss", "e"),
            FetchStatus.SKIPPED,
            "https://e.example/rss",
            error="skipped after 12 consecutive failures; re-enable with `pipeline feeds enable e` or ...",
        ),
    ]


def test_fetch_table_shows_status_reason_counts_and_time() -> None:
    console = Console(record=True, width=140, file=io.StringIO())
    render_fetch_table(_results(), {"a": 3, "d": 2, "c": 7}, console)
    lines = console.export_text().splitlines()

    def row(name: str) -> str:
        return next(line for line in lines if name in line)

    assert "new" in row("A ") and " 3 " in row("A ") and "0.4 s" in row("A ")
    assert "unchanged" in row("B ")
    assert "failed: HTTP 404 Not Found" in row("Monde") and "–" in row("Monde")  # no count for failures
    assert "Le [bold]Monde[/bold]" in row("Monde")  # feed text is shown, not interpreted as markup
    assert "moved → https://d.example/new" in row("D ") and " 2 " in row("D ")
    assert "skipped" in row("E ")
    summary = next(line for line in lines if line.startswith("5 feeds"))
    assert summary == ("5 feeds · 1 new · 1 unchanged · 1 failed · 1 moved · 1 skipped · 5 new items · slowest 1.3 s")
    assert any("pipeline feeds enable ID" in line and "e" in line for line in lines)


def test_progress_counts_feeds_on_a_terminal_and_is_silent_otherwise(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed.xml").respond_with_data(RSS)
    feeds = [feed(httpserver.url_for("/feed.xml"), f"f{i}") for i in range(3)]

    terminal = io.StringIO()
    with FetchProgress(len(feeds), Console(file=terminal, force_terminal=True, width=100)) as progress:
        fetch_feeds(feeds, FAST, {}, on_result=progress.advance)
    assert progress.done == 3
    assert "3/3" in terminal.getvalue()

    piped = io.StringIO()
    with FetchProgress(len(feeds), Console(file=piped, force_terminal=False)) as progress:
        fetch_feeds(feeds, FAST, {}, on_result=progress.advance)
    assert progress.done == 3
    assert piped.getvalue() == ""


def test_while_waiting_is_called_once_when_every_request_is_out_before_any_answer(raw_server: RawServer,
                                                                                  tmp_path: Path) -> None:
    """The server answers only once while_waiting has run: called any later, it would wait for
    answers that never come (the route gives up after 10 s and says so)."""
    late: list[str] = []

    def held(handler: BaseHTTPRequestHandler, server: RawServer) -> None:
        if not server.release.wait(10):
            late.append(handler.path)
        send_feed(handler)

    raw_server.routes["/held.xml"] = held
    feeds = [feed(raw_server.url("/held.xml"), f"f{i}") for i in range(4)]
    feeds.append(feed((tmp_path / "missing.xml").as_uri(), "file"))
    answered: list[str] = []
    calls: list[list[str]] = []

    def while_waiting() -> None:
        calls.append(list(answered))
        raw_server.release.set()

    results = fetch_feeds(feeds, FetchSettings(per_host=4, deadline=20), {},
                          on_result=lambda r: answered.append(r.feed.id), while_waiting=while_waiting)
    assert late == []
    assert [r.status for r in results] == [FetchStatus.NEW] * 4 + [FetchStatus.FAILED]
    assert len(calls) == 1 and not {"f0", "f1", "f2", "f3"} & set(calls[0])  # before any HTTP answer


def test_while_waiting_runs_without_feeds_and_its_error_comes_after_the_fetch(httpserver: HTTPServer) -> None:
    calls: list[int] = []
    assert fetch_feeds([], FAST, {}, while_waiting=lambda: calls.append(1)) == []
    assert calls == [1]

    httpserver.expect_request("/feed.xml").respond_with_data(RSS)
    answered: list[FetchResult] = []

    def broken() -> None:
        raise RuntimeError("while waiting")

    with pytest.raises(RuntimeError, match="while waiting"):
        fetch_feeds([feed(httpserver.url_for("/feed.xml"))], FAST, {}, on_result=answered.append,
                    while_waiting=broken)
    assert [r.status for r in answered] == [FetchStatus.NEW]  # the feed was fetched all the same


def test_no_progress_console_where_rich_would_draw_no_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    assert progress_console(io.StringIO()) is None
    monkeypatch.setenv("FORCE_COLOR", "1")
    console = progress_console(io.StringIO())
    assert console is not None and console.is_terminal  # rich decides when the environment has a say
    monkeypatch.delenv("FORCE_COLOR")
    monkeypatch.setenv("TTY_COMPATIBLE", "0")
    console = progress_console(io.StringIO())
    assert console is not None and not console.is_terminal


def test_a_failing_on_result_callback_is_a_bug_and_raises(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed.xml").respond_with_data(RSS)

    def broken(result: FetchResult) -> None:
        raise RuntimeError("bug in the progress display")

    with pytest.raises(RuntimeError, match="bug in the progress display"):
        fetch_feeds([feed(httpserver.url_for("/feed.xml"), f"f{i}") for i in range(3)], FAST, {}, on_result=broken)
