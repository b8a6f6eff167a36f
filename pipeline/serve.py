"""`pipeline serve`: the archive site (output/) on a local, read-only HTTP server.

What it serves is exactly the site and nothing around it:

* only regular files whose real path (symbolic links resolved) lies inside the output folder,
  opened without following a last symbolic link; hidden files (the archive's manifest, temporary
  files of a build in progress) are not part of the site;
* a folder is its `index.html` (a path without its final slash is redirected to it), never a
  listing; anything else is a plain 404, as is any path with a control character or a `..`;
* every text type carries `charset=utf-8` (a browser would otherwise show "Â·" for "·" in
  digest.txt), and every answer `X-Content-Type-Options: nosniff` and the site's
  Content-Security-Policy, which allows the search page's own script and nothing else.

It binds to 127.0.0.1 unless told otherwise: publishing the archive is a web server's job.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import stat
import urllib.parse
from pathlib import Path
from typing import TextIO

from pipeline.archive import content_security_policy, search_script
from pipeline.errors import PipelineError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
# The site's files by suffix; a text type always says its charset. Other suffixes are bytes.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".xml": "application/atom+xml; charset=utf-8",  # feed.xml, the only XML file of the site
    ".json": "application/json; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
}
BINARY = "application/octet-stream"


class SiteServer(http.server.ThreadingHTTPServer):
    """A threading HTTP server that knows its site folder and the headers of every answer."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], root: Path, security_headers: dict[str, str],
                 log_stream: TextIO | None = None):
        self.root = root.resolve()
        self.security_headers = security_headers
        self.log_stream = log_stream  # one line per request, or nothing
        super().__init__(address, SiteHandler)


class SiteHandler(http.server.BaseHTTPRequestHandler):
    server: SiteServer
    server_version = "TechMatinArchive"
    sys_version = ""

    def do_GET(self) -> None:
        self._answer(with_body=True)

    def do_HEAD(self) -> None:
        self._answer(with_body=False)

    def end_headers(self) -> None:
        # Every answer, errors and redirects included, carries the same protective headers.
        for name, value in self.server.security_headers.items():
            self.send_header(name, value)
        super().end_headers()

    def _answer(self, with_body: bool) -> None:
        try:
            path = urllib.parse.urlsplit(self.path).path
        except ValueError:  # "//[x": not a URL at all
            path = ""
        parts = _site_parts(path) if path.startswith("/") else None
        if parts is None:
            self._not_found(with_body)
            return
        target = self.server.root.joinpath(*parts)
        try:
            real = target.resolve(strict=True)
        except (OSError, RuntimeError):  # missing, a loop of links, a name too long
            self._not_found(with_body)
            return
        if real != self.server.root and self.server.root not in real.parents:
            self._not_found(with_body)  # a link out of the site: as if it did not exist
            return
        if real.is_dir():
            if not path.endswith("/"):
                # Relative links of folder/index.html need the slash. Built from the checked parts,
                # so "//host" can never come out as a protocol-relative redirect.
                self._redirect("/" + "".join(f"{urllib.parse.quote(p)}/" for p in parts))
                return
            real = real / "index.html"
        self._send_file(real, with_body)

    def _send_file(self, path: Path, with_body: bool) -> None:
        try:
            # No following a last link; O_NONBLOCK so that a named pipe cannot hang the thread.
            descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            self._not_found(with_body)
            return
        with os.fdopen(descriptor, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                self._not_found(with_body)
                return
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPES.get(path.suffix.lower(), BINARY))
            self.send_header("Content-Length", str(info.st_size))
            self.send_header("Cache-Control", "no-cache")  # a rebuild shows at the next reload
            self.end_headers()
            if with_body:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the reader went away
                    shutil.copyfileobj(handle, self.wfile)

    def _not_found(self, with_body: bool) -> None:
        body = b"404 Not Found\n"
        self.send_response(404)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(301)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        # The request line is the client's text: keep the log on one line, whatever it sent.
        if self.server.log_stream is not None:
            line = (format % args).encode("unicode_escape").decode("ascii")
            self.server.log_stream.write(f"{self.address_string()} - {line}\n")


def _site_parts(path: str) -> list[str] | None:
    """The segments of a URL path inside the site, or None if it cannot name a file of the site
    (undecodable, a control character, `..`, a hidden name, a backslash)."""
    try:
        decoded = urllib.parse.unquote(path, errors="strict")
    except UnicodeDecodeError:
        return None
    parts = [p for p in decoded.split("/") if p]
    for part in parts:
        if part.startswith(".") or "\\" in part or any(ord(ch) < 32 or ord(ch) == 127 for ch in part):
            return None
    return parts


def make_server(output_dir: Path, templates_dir: Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                log_stream: TextIO | None = None) -> SiteServer:
    """A server for the site in `output_dir`, listening (not yet serving). `port` 0 picks a free
    one (see `server.server_address`). Bad input is a PipelineError with one line."""
    if not 0 <= port <= 65535:
        raise PipelineError(f"invalid port {port}: must be between 0 and 65535")
    if not output_dir.is_dir():
        raise PipelineError(f"{output_dir}: no such folder; run `pipeline run` first")
    _, script_hash = search_script(templates_dir)
    headers = {
        "X-Content-Type-Options": "nosniff",
        # frame-ancestors only works as a header (a <meta> policy ignores it).
        "Content-Security-Policy": f"{content_security_policy(script_hash)}; frame-ancestors 'none'",
        "Referrer-Policy": "no-referrer",
    }
    try:
        server = SiteServer((host, port), output_dir, headers, log_stream)
    except (OSError, OverflowError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PipelineError(f"cannot listen on {host}:{port}: {reason}") from None
    return server


def serve_site(output_dir: Path, templates_dir: Path, host: str, port: int, out: TextIO, log: TextIO) -> None:
    """Serve the site until Ctrl-C; prints the URL once the socket listens."""
    server = make_server(output_dir, templates_dir, host, port, log_stream=log)
    shown = f"[{host}]" if ":" in host else host
    print(f"serving {output_dir} on http://{shown}:{server.server_port}/ (Ctrl-C to stop)", file=out, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
