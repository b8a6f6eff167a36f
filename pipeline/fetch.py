"""Fetch stage: feed URLs → raw bytes plus HTTP metadata, for every feed, on time.

Real feeds are slow, broken, moved, huge and mislabelled. This stage turns each of them into
one `FetchResult` and never raises for a feed-level problem, so one bad outlet cannot stop
the daily digest:

- feeds are fetched concurrently (``settings.concurrency`` at once, ``settings.per_host`` per
  host, so one outlet with many feeds is not hammered);
- conditional GET (If-None-Match / If-Modified-Since) makes an unchanged feed cost a 304;
- every feed has connect and read timeouts and an overall deadline that covers its retries,
  so a stalled server delays nobody else and the run ends on time;
- connection errors, 5xx and 429 are retried with exponential backoff and jitter, honouring
  Retry-After, within the deadline;
- redirects are followed by hand, so loops are caught and permanent moves (301/308) are
  reported for the store to remember;
- bodies are streamed and cut at ``settings.max_bytes``, *after* decompression, so neither a
  huge feed nor a gzip bomb can exhaust memory.

Bodies are not decoded or parsed here: the raw bytes and the Content-Type header go to
`pipeline.parse`, which owns encodings and "is this a feed at all".
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import random
import socket
import ssl
import sys
import zlib
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

# httpx's __init__ also imports its command-line client (httpx._main, with click, pygments and
# rich.syntax) whenever those are installed, as they are here (uvicorn and rich bring them): about
# 40 ms of every run's start-up for a command the pipeline never runs, a fifth of a run whose feeds
# all answer 304. A None in sys.modules makes that one import fail, and httpx then defines a stub
# `httpx.main` instead (its own fallback); the entry goes right after, so a later
# `import httpx._main` works as usual.
_HTTPX_CLI = "httpx._main"
_hide_httpx_cli = "httpx" not in sys.modules and _HTTPX_CLI not in sys.modules
if _hide_httpx_cli:
    sys.modules[_HTTPX_CLI] = None  # type: ignore[assignment]
try:
    import httpx
finally:
    if _hide_httpx_cli and sys.modules.get(_HTTPX_CLI, "") is None:
        del sys.modules[_HTTPX_CLI]

from pipeline.errors import unexpected_error  # noqa: E402
from pipeline.models import FeedSource, FeedState, FetchResult, FetchSettings, FetchStatus  # noqa: E402

__all__ = ["ACCEPT", "fetch_feeds", "fetch_feeds_async", "skip_reason"]

# Feed types first; HTML and anything else last, so content-negotiating servers send the feed
# but servers that only have a page still answer (parse then says "not a feed").
ACCEPT = (
    "application/atom+xml, application/rss+xml, application/rdf+xml;q=0.9, "
    "application/xml;q=0.8, text/xml;q=0.8, */*;q=0.1"
)
# Only what we can decode ourselves with a bounded output size (see _Decoder).
ACCEPT_ENCODING = "gzip, deflate"

_REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
_PERMANENT_CODES = frozenset({301, 308})
# 408/425/429 and 5xx say "try again later"; other 4xx will not get better by retrying.
_RETRY_CODES = frozenset({408, 425, 429})
_BACKOFF_BASE = 0.5  # seconds before the second try; doubles each time
_BACKOFF_MAX = 10.0
_MB = 1024 * 1024

# file: URL suffixes that say what the bundled file holds; anything else is taken for XML.
_FILE_TYPES = {
    ".rss": "application/rss+xml",
    ".atom": "application/atom+xml",
    ".rdf": "application/rdf+xml",
    ".html": "text/html",
    ".htm": "text/html",
    ".json": "application/json",
    ".txt": "text/plain",
}


# ---------------------------------------------------------------- public entry points


def fetch_feeds(
    feeds: Sequence[FeedSource],
    settings: FetchSettings,
    states: Mapping[str, FeedState],
    on_result: Callable[[FetchResult], None] | None = None,
    while_waiting: Callable[[], None] | None = None,
) -> list[FetchResult]:
    """Fetch every feed and return one result per feed, in the order of `feeds`.

    `states` maps feed ids to what the store remembers (redirected URL, validators, failure
    count); feeds without a state are fetched from their configured URL. `on_result` is
    called once per feed as soon as it is done (for progress display), in the calling thread
    (in a worker thread when called from inside a running event loop).

    `while_waiting` is called once, in that same thread, as soon as every feed has sent its
    request (or is done): work its caller needs afterwards, whatever the answers, then takes
    time the run would spend waiting for them (a run whose feeds all answer 304 is mostly
    that wait). It holds up the handling of answers that come meanwhile, so it should take
    less than a round trip. What it raises is raised once every feed is done.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(fetch_feeds_async(feeds, settings, states, on_result, while_waiting))
    # Called from inside an event loop (an async job runner, a notebook): asyncio.run() is not
    # allowed there, so run our own loop in a worker thread and wait for it.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fetch") as pool:
        return pool.submit(asyncio.run,
                           fetch_feeds_async(feeds, settings, states, on_result, while_waiting)).result()


async def fetch_feeds_async(
    feeds: Sequence[FeedSource],
    settings: FetchSettings,
    states: Mapping[str, FeedState],
    on_result: Callable[[FetchResult], None] | None = None,
    while_waiting: Callable[[], None] | None = None,
) -> list[FetchResult]:
    """The same as `fetch_feeds`, for callers that already run an event loop."""
    fetcher = _Fetcher(settings, on_result, _WhileWaiting(while_waiting, len(feeds)))
    tasks = [asyncio.create_task(fetcher.fetch(feed, states.get(feed.id))) for feed in feeds]
    try:
        results = list(await asyncio.gather(*tasks))
        fetcher.while_waiting.finish()
        return results
    finally:
        # Tasks are still running here only if something raised (a bug in on_result, or the
        # caller cancelled us): stop them before their HTTP clients are closed under them.
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await fetcher.aclose()


def skip_reason(feed: FeedSource, state: FeedState | None, settings: FetchSettings) -> str | None:
    """Why this feed is not fetched this run, or None when it is.

    A `failure_threshold` of 0 means "never skip for failures" (what `--retry-failed` wants).
    """
    if not feed.enabled:
        return "disabled in sources.yaml (enabled: false)"
    if state is None:
        return None
    failures = state.consecutive_failures
    if settings.failure_threshold > 0 and failures >= settings.failure_threshold:
        return (
            f"skipped after {failures} consecutive failures; re-enable with "
            f"`pipeline feeds enable {feed.id}` or `pipeline run --retry-failed`"
        )
    if state.disabled:
        return f"disabled; re-enable with `pipeline feeds enable {feed.id}`"
    return None


# ---------------------------------------------------------------- one feed


@dataclass(frozen=True)
class _Outcome:
    """What one try produced: a usable answer, a final failure, or a failure worth retrying."""

    status: FetchStatus
    final_url: str | None = None
    body: bytes | None = None
    content_type: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    http_status: int | None = None
    permanent_redirect: str | None = None
    error: str | None = None
    truncated: bool = False
    retryable: bool = False
    retry_after: float | None = None  # seconds the server asked us to wait


def _failed(
    reason: str,
    *,
    retryable: bool = False,
    retry_after: float | None = None,
    http_status: int | None = None,
    final_url: str | None = None,
    truncated: bool = False,
) -> _Outcome:
    return _Outcome(
        status=FetchStatus.FAILED,
        error=reason,
        retryable=retryable,
        retry_after=retry_after,
        http_status=http_status,
        final_url=final_url,
        truncated=truncated,
    )


class _WhileWaiting:
    """Calls the caller's `while_waiting` once every feed has sent its request or is done (see
    fetch_feeds). A request counts as sent when httpcore starts reading its answer (its "trace"
    extension says so), by then the request is written; a feed whose first try failed or that
    waits for a slot counts once its first try or its slot is over. Called by the event loop
    after that feed's task yields, so the last request is out first."""

    def __init__(self, call: Callable[[], None] | None, feeds: int) -> None:
        self._call = call
        self._pending = feeds  # feeds not yet under way
        self._error: Exception | None = None

    @property
    def wanted(self) -> bool:
        return self._call is not None

    def under_way(self) -> Callable[[], None]:
        """For one feed: a function that counts it as under way (the second call does nothing)."""
        counted = False

        def count() -> None:
            nonlocal counted
            if counted or self._call is None:
                return
            counted = True
            self._pending -= 1
            if self._pending <= 0:
                asyncio.get_running_loop().call_soon(self._run)

        return count

    def _run(self) -> None:
        call, self._call = self._call, None
        if call is None:
            return
        try:
            call()
        except Exception as exc:  # raised once the feeds are done (finish), not lost in the event loop
            self._error = exc

    def finish(self) -> None:
        """Every feed is done: call it now if that has not happened (no feed at all), and raise
        what it raised."""
        self._run()
        if self._error is not None:
            raise self._error


class _Fetcher:
    """Per-run fetching state: the HTTP client, concurrency limits and the jitter source."""

    def __init__(self, settings: FetchSettings, on_result: Callable[[FetchResult], None] | None,
                 while_waiting: _WhileWaiting | None = None) -> None:
        self._settings = settings
        self._on_result = on_result
        self.while_waiting = while_waiting or _WhileWaiting(None, 0)
        self._all = asyncio.Semaphore(max(settings.concurrency, 1))
        per_host = max(settings.per_host, 1)
        self._hosts: defaultdict[str, asyncio.Semaphore] = defaultdict(lambda: asyncio.Semaphore(per_host))
        self._random = random.Random()  # jitter only; per run so no state is shared between runs
        timeout = httpx.Timeout(
            connect=settings.connect_timeout,
            read=settings.read_timeout,
            write=settings.read_timeout,
            pool=None,  # our semaphores, not the pool, decide who waits; the deadline bounds it
        )
        # One client (building one takes milliseconds: one per host cost more than the 304s of
        # a run) over one small connection pool per origin (see _PoolPerOrigin).
        self._client = httpx.AsyncClient(
            headers={"User-Agent": settings.user_agent, "Accept": ACCEPT, "Accept-Encoding": ACCEPT_ENCODING},
            timeout=timeout,
            transport=_PoolPerOrigin(httpx.Limits(max_connections=per_host, max_keepalive_connections=per_host)),
            follow_redirects=False,
            event_hooks={"response": [_refuse_bad_redirect]},
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def fetch(self, feed: FeedSource, state: FeedState | None) -> FetchResult:
        url = state.url if state is not None and state.url else feed.url
        under_way = self.while_waiting.under_way()
        try:
            result = await self._fetch_one(feed, url, state, under_way)
        except Exception as exc:
            # The per-feed boundary: whatever one feed's server or URL provokes (an exception a
            # library raises that nobody listed, or a bug of ours) fails that feed alone, with a
            # one-line reason that the report and the feed's health keep. Cancellation and
            # KeyboardInterrupt are not Exceptions and still stop the run.
            result = FetchResult(feed=feed, status=FetchStatus.FAILED, url=url, error=unexpected_error(exc))
        under_way()
        if self._on_result is not None:
            self._on_result(result)  # outside the boundary: a failing callback is the caller's bug
        return result

    async def _fetch_one(self, feed: FeedSource, url: str, state: FeedState | None,
                         under_way: Callable[[], None]) -> FetchResult:
        reason = skip_reason(feed, state, self._settings)
        if reason is not None:
            return FetchResult(feed=feed, status=FetchStatus.SKIPPED, url=url, error=reason)
        if urlsplit(url).scheme.lower() == "file":
            return await self._fetch_file(feed, url)
        return await self._fetch_http(feed, url, state, under_way)

    @asynccontextmanager
    async def _slot(self, host: str) -> AsyncIterator[None]:
        # Host first: a feed waiting for its busy host must not hold one of the global slots.
        async with self._hosts[host], self._all:
            yield

    async def _fetch_http(self, feed: FeedSource, url: str, state: FeedState | None,
                          under_way: Callable[[], None]) -> FetchResult:
        loop = asyncio.get_running_loop()
        settings = self._settings
        try:
            # Per machine, not per port: politeness is about the server behind the name.
            host = urlsplit(url).hostname or url
        except ValueError as exc:
            return FetchResult(feed=feed, status=FetchStatus.FAILED, url=url, error=f"invalid URL: {exc}")
        headers: dict[str, str] = {}
        # A validator that is not ASCII cannot go into a request header; without it the feed
        # costs a full download once, instead of failing every run.
        if state is not None and state.etag and state.etag.isascii():
            headers["If-None-Match"] = state.etag
        if state is not None and state.last_modified and state.last_modified.isascii():
            headers["If-Modified-Since"] = state.last_modified

        # The deadline starts when the feed first gets a slot, not while it queues behind
        # others: the run's length is bounded by concurrency, each feed's by its deadline.
        started: float | None = None
        deadline_at: float | None = None
        tries = 0
        while True:
            tries += 1
            try:
                async with asyncio.timeout_at(deadline_at) as budget:
                    async with self._slot(host):
                        if started is None:
                            started = loop.time()
                            deadline_at = started + settings.deadline
                            budget.reschedule(deadline_at)
                        outcome = await self._try(self._client, url, headers, state, under_way)
            except TimeoutError:
                outcome = _failed(f"timed out after {settings.deadline:g} s")
            under_way()
            if not outcome.retryable or tries >= settings.max_tries:
                break
            assert deadline_at is not None  # set on the first try
            delay = outcome.retry_after if outcome.retry_after is not None else self._backoff(tries)
            if loop.time() + delay >= deadline_at:
                if outcome.retry_after is not None:
                    outcome = _failed(
                        f"{outcome.error}; server asked to retry after {outcome.retry_after:g} s, "
                        f"past the {settings.deadline:g} s deadline",
                        retry_after=outcome.retry_after,
                    )
                break
            await asyncio.sleep(delay)

        elapsed = loop.time() - started if started is not None else 0.0
        error = outcome.error
        if error is not None and tries > 1:
            error = f"{error} (after {tries} tries)"
        return FetchResult(
            feed=feed,
            status=outcome.status,
            url=url,
            final_url=outcome.final_url,
            body=outcome.body,
            content_type=outcome.content_type,
            etag=outcome.etag,
            last_modified=outcome.last_modified,
            http_status=outcome.http_status,
            permanent_redirect=outcome.permanent_redirect,
            error=error,
            elapsed=elapsed,
            truncated=outcome.truncated,
            retry_after=outcome.retry_after,
        )

    def _backoff(self, tries: int) -> float:
        # "Equal jitter": half the exponential step fixed, half random, so feeds of one host
        # that failed together do not all come back at the same instant.
        step = min(_BACKOFF_MAX, _BACKOFF_BASE * 2.0 ** (tries - 1))
        return step / 2 + self._random.uniform(0, step / 2)

    async def _try(
        self, client: httpx.AsyncClient, url: str, headers: Mapping[str, str], state: FeedState | None,
        under_way: Callable[[], None],
    ) -> _Outcome:
        """One try: follow redirects by hand, then read the final answer."""
        settings = self._settings
        extensions = {"trace": _answer_awaited(under_way)} if self.while_waiting.wanted else None
        current = url
        visited = {url}
        permanent: str | None = None  # where the unbroken run of 301/308 from `url` leads
        only_permanent = True
        hops = 0
        while True:
            try:
                request = client.build_request("GET", current, headers=headers, extensions=extensions)
            except httpx.InvalidURL as exc:
                return _failed(f"invalid URL {current}: {exc}")
            try:
                response = await client.send(request, stream=True)
            except _RefusedRedirect as exc:
                return _failed(str(exc), final_url=current)
            except (httpx.HTTPError, OSError) as exc:
                return _transport_failure(exc, settings, final_url=current)
            try:
                target = _redirect_target(response)
                if target is not None:
                    hops += 1
                    if target in visited:
                        return _failed("redirect loop", final_url=target, http_status=response.status_code)
                    if hops > settings.max_redirects:
                        return _failed(
                            f"too many redirects (>{settings.max_redirects})",
                            final_url=target,
                            http_status=response.status_code,
                        )
                    # A permanent move is only worth remembering while every hop so far was
                    # permanent: after a 302 the rest of the chain is somebody's temporary setup.
                    if only_permanent and response.status_code in _PERMANENT_CODES:
                        permanent = target
                    else:
                        only_permanent = False
                    visited.add(target)
                    current = target
                    continue
                return await self._answer(response, state, permanent)
            except (httpx.HTTPError, OSError) as exc:
                return _transport_failure(exc, settings, final_url=current)
            finally:
                await response.aclose()

    async def _answer(self, response: httpx.Response, state: FeedState | None, permanent: str | None) -> _Outcome:
        """Turn the final (non-redirect) response into an outcome."""
        settings = self._settings
        code = response.status_code
        final_url = str(response.url)
        etag = response.headers.get("etag")
        last_modified = response.headers.get("last-modified")
        if code == 304:
            # A 304 need not repeat the validators; keep the ones we sent so the store does not
            # forget them and turn the next run into a full download.
            return _Outcome(
                status=FetchStatus.UNCHANGED,
                final_url=final_url,
                etag=etag or (state.etag if state else None),
                last_modified=last_modified or (state.last_modified if state else None),
                http_status=code,
                permanent_redirect=permanent,
            )
        if not 200 <= code < 300:
            retryable = code in _RETRY_CODES or code >= 500
            retry_after = _retry_after(response.headers.get("retry-after")) if retryable else None
            return _failed(
                f"HTTP {code} {_reason_phrase(response)}".rstrip(),
                retryable=retryable,
                retry_after=retry_after,
                http_status=code,
                final_url=final_url,
            )

        over_cap = _failed(
            f"body over {_size(settings.max_bytes)} cap",
            truncated=True,
            http_status=code,
            final_url=final_url,
        )
        declared = response.headers.get("content-length", "").strip()
        if declared.isdigit() and int(declared) > settings.max_bytes:
            return over_cap  # no need to read 50 MB to learn what the server already said
        try:
            decoder = _Decoder(response.headers.get("content-encoding", ""))
        except ValueError as exc:
            return _failed(str(exc), http_status=code, final_url=final_url)

        body = bytearray()
        received = 0
        try:
            async for chunk in response.aiter_raw():
                received += len(chunk)
                body += decoder.feed(chunk, settings.max_bytes - len(body) + 1)
                if len(body) > settings.max_bytes:
                    return over_cap
            body += decoder.flush(settings.max_bytes - len(body) + 1)
        except zlib.error as exc:
            return _failed(
                f"could not decompress the {decoder.name} body: {exc}", http_status=code, final_url=final_url
            )
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            # A close before the announced end is a transport failure: retry like one.
            return _failed(
                f"connection closed mid-body after {received} bytes"
                if received
                else f"connection closed before the body: {_first_line(exc)}",
                retryable=True,
                http_status=code,
                final_url=final_url,
            )
        if len(body) > settings.max_bytes:
            return over_cap
        return _Outcome(
            status=FetchStatus.MOVED if permanent else FetchStatus.NEW,
            final_url=final_url,
            body=bytes(body),
            content_type=response.headers.get("content-type"),
            etag=etag,
            last_modified=last_modified,
            http_status=code,
            permanent_redirect=permanent,
        )

    async def _fetch_file(self, feed: FeedSource, url: str) -> FetchResult:
        loop = asyncio.get_running_loop()
        started = loop.time()
        parts = urlsplit(url)

        def failed(reason: str, truncated: bool = False) -> FetchResult:
            return FetchResult(
                feed=feed,
                status=FetchStatus.FAILED,
                url=url,
                error=reason,
                elapsed=loop.time() - started,
                truncated=truncated,
            )

        if parts.netloc not in ("", "localhost"):
            return failed(f"file: URL on another host is not supported: {url}")
        path = Path(url2pathname(parts.path))
        try:
            data = await asyncio.to_thread(_read_capped, path, self._settings.max_bytes)
        except FileNotFoundError:
            return failed(f"file not found: {path}")
        except IsADirectoryError:
            return failed(f"not a file: {path}")
        except PermissionError:
            return failed(f"permission denied: {path}")
        except OSError as exc:
            return failed(f"cannot read {path}: {exc.strerror or exc}")
        if data is None:
            return failed(f"body over {_size(self._settings.max_bytes)} cap", truncated=True)
        return FetchResult(
            feed=feed,
            status=FetchStatus.NEW,
            url=url,
            final_url=url,
            body=data,
            content_type=_FILE_TYPES.get(path.suffix.lower(), "application/xml"),
            elapsed=loop.time() - started,
        )


class _PoolPerOrigin(httpx.AsyncBaseTransport):
    """One small connection pool per origin rather than one big pool: httpcore scans its whole
    pool on every request and response, which costs O(n²) with hundreds of connections (seconds
    of CPU for 200 feeds), while per-origin pools stay at `per_host` connections and still reuse
    connections between feeds of one outlet. The CA bundle (~0.1 s to load) is read on the first
    https origin only: a run of plain-HTTP feeds never needs it. The context of plain-HTTP origins
    is made once too (0.6 ms each: 57 of them were a tenth of a run whose feeds all answer 304)."""

    def __init__(self, limits: httpx.Limits) -> None:
        self._limits = limits
        self._pools: dict[tuple[str, str, int | None], httpx.AsyncHTTPTransport] = {}
        self._tls: ssl.SSLContext | None = None
        self._no_tls: ssl.SSLContext | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        origin = (url.scheme, url.host, url.port)
        pool = self._pools.get(origin)
        if pool is None:
            pool = httpx.AsyncHTTPTransport(verify=self._tls_for(url.scheme), limits=self._limits)
            self._pools[origin] = pool
        return await pool.handle_async_request(request)

    def _tls_for(self, scheme: str) -> ssl.SSLContext:
        if scheme == "https":
            if self._tls is None:
                self._tls = httpx.create_ssl_context()
            return self._tls
        # A plain-HTTP origin never starts TLS; should anything try, this context verifies
        # certificates and trusts none, so it fails rather than talk unverified.
        if self._no_tls is None:
            self._no_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        return self._no_tls

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.aclose()


# ---------------------------------------------------------------- helpers


def _answer_awaited(call: Callable[[], None]) -> Callable[[str, Mapping[str, object]], Awaitable[None]]:
    """An httpcore "trace" extension (a coroutine function, as the async interface requires) that
    calls `call` when the request is written and its answer awaited."""

    async def trace(event: str, info: Mapping[str, object]) -> None:
        if event == "http11.receive_response_headers.started":
            call()

    return trace


class _RefusedRedirect(Exception):
    """A redirect whose Location cannot or must not be followed; its str() is the reason."""


def _redirect_target(response: httpx.Response) -> str | None:
    """Where a redirect leads (absolute, without fragment), None when `response` is no redirect.
    Raises _RefusedRedirect for a target we must not follow: not a URL, or not http(s)."""
    location = response.headers.get("location")
    if response.status_code not in _REDIRECT_CODES or not location:
        return None
    try:
        target = str(response.url.join(location.strip()).copy_with(fragment=None))
    except (httpx.InvalidURL, ValueError):
        raise _RefusedRedirect(f"redirect to an invalid URL: {location[:200]}") from None
    if urlsplit(target).scheme.lower() not in ("http", "https"):
        raise _RefusedRedirect(f"redirect to a non-HTTP URL: {target[:200]}")
    return target


async def _refuse_bad_redirect(response: httpx.Response) -> None:
    """httpx builds the next request of a redirect from Location even when it does not follow it,
    and raises InvalidURL on `mailto:`, `javascript:`, `about:` or `data:` targets: this response
    hook runs first and names the problem instead."""
    _redirect_target(response)


class _Decoder:
    """Content-Encoding decoder whose output per call is bounded.

    httpx's own decoders inflate a whole network chunk at once: 64 KB of gzipped zeros become
    64 MB in memory before any size check can run. zlib's `max_length` lets us stop at the cap.
    """

    def __init__(self, header: str) -> None:
        codings = [c.strip().lower() for c in header.split(",") if c.strip()]
        codings = [c for c in codings if c != "identity"]
        if len(codings) > 1:
            raise ValueError(f"unsupported Content-Encoding {header!r} (more than one coding)")
        self.name = codings[0] if codings else "identity"
        self._zlib: zlib._Decompress | None = None
        self._pending = b""  # input zlib has not consumed yet because max_length stopped it
        self._sniffing = False
        self._fed = False  # whether any compressed byte arrived (an empty body is just empty)
        if self.name in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif self.name == "deflate":
            # "deflate" should be zlib-wrapped, but many servers send raw deflate: decide on
            # the first bytes (a zlib header has CMF*256+FLG divisible by 31).
            self._sniffing = True
        elif self.name != "identity":
            raise ValueError(f"unsupported Content-Encoding {self.name!r}")

    def feed(self, data: bytes, limit: int) -> bytes:
        if self.name == "identity" or not data:
            return data
        self._fed = True
        if self._sniffing:
            self._pending += data
            if len(self._pending) < 2:
                return b""
            cmf, flg = self._pending[0], self._pending[1]
            wrapped = cmf & 0x0F == 8 and (cmf * 256 + flg) % 31 == 0
            self._zlib = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
            self._sniffing = False
            data, self._pending = self._pending, b""
        assert self._zlib is not None
        # Feed the leftover first; if the limit is reached, the caller stops reading anyway.
        source = self._pending + data
        out = self._zlib.decompress(source, max(limit, 1))
        self._pending = self._zlib.unconsumed_tail
        return out

    def flush(self, limit: int) -> bytes:
        if self.name == "identity" or not self._fed:
            return b""
        if self._zlib is None:  # fewer than two bytes came: not a deflate stream
            raise zlib.error("compressed data ended early")
        out = self._zlib.decompress(self._pending, max(limit, 1)) if self._pending else b""
        self._pending = self._zlib.unconsumed_tail
        if len(out) < limit and not self._pending:
            out += self._zlib.flush()
        if not self._zlib.eof and not self._pending:
            raise zlib.error("compressed data ended early")
        return out


def _read_capped(path: Path, cap: int) -> bytes | None:
    """The file's bytes, or None if it is larger than `cap` (without reading more than cap+1)."""
    with path.open("rb") as handle:
        data = handle.read(cap + 1)
    return None if len(data) > cap else data


def _transport_failure(exc: httpx.HTTPError | OSError, settings: FetchSettings, final_url: str | None) -> _Outcome:
    """A one-line reason for an exception raised before a response arrived."""
    if isinstance(exc, httpx.ConnectTimeout):
        return _failed(
            f"connection timed out after {settings.connect_timeout:g} s", retryable=True, final_url=final_url
        )
    if isinstance(exc, httpx.ReadTimeout):
        return _failed(f"no data for {settings.read_timeout:g} s (read timeout)", retryable=True, final_url=final_url)
    if isinstance(exc, httpx.TimeoutException):
        return _failed(f"timed out: {_first_line(exc)}", retryable=True, final_url=final_url)
    if isinstance(exc, httpx.UnsupportedProtocol):
        scheme = urlsplit(final_url or "").scheme
        return _failed(f"unsupported URL scheme {scheme!r} (use http, https or file)", final_url=final_url)
    if isinstance(exc, httpx.ConnectError):
        causes = _causes(exc)
        if any(isinstance(c, socket.gaierror) for c in causes):
            return _failed("DNS lookup failed", retryable=True, final_url=final_url)
        if any(isinstance(c, ConnectionRefusedError) for c in causes):
            return _failed("connection refused", retryable=True, final_url=final_url)
        if any(isinstance(c, ssl.SSLCertVerificationError) for c in causes):
            # A bad certificate will not fix itself within seconds.
            return _failed(f"TLS certificate rejected: {_first_line(exc)}", final_url=final_url)
        if any(isinstance(c, ssl.SSLError) for c in causes):
            return _failed(f"TLS error: {_first_line(exc)}", retryable=True, final_url=final_url)
        return _failed(f"connection failed: {_first_line(exc)}", retryable=True, final_url=final_url)
    if isinstance(exc, httpx.RemoteProtocolError):
        return _failed(
            f"server closed the connection or broke HTTP: {_first_line(exc)}",
            retryable=True,
            final_url=final_url,
        )
    if isinstance(exc, httpx.TransportError | OSError):
        return _failed(f"connection error: {_first_line(exc)}", retryable=True, final_url=final_url)
    return _failed(f"request failed: {_first_line(exc)}", final_url=final_url)


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and everything it was raised from (httpx wraps httpcore wraps OSError)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def _reason_phrase(response: httpx.Response) -> str:
    # The standard phrase reads the same for every server; fall back to the server's own.
    try:
        return HTTPStatus(response.status_code).phrase
    except ValueError:
        return response.reason_phrase


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def _size(n: int) -> str:
    if n >= _MB:
        return f"{n / _MB:g} MB"
    if n >= 1024:
        return f"{n / 1024:g} KB"
    return f"{n} bytes"
