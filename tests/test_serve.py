"""`pipeline serve` against a real server on 127.0.0.1: only the site's regular files, no listing,
no way out of the output folder, the right types and headers, one-line errors."""

from __future__ import annotations

import http.client
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.archive import content_security_policy, search_script
from pipeline.errors import PipelineError
from pipeline.render import DEFAULT_TEMPLATES
from pipeline.serve import make_server

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def site(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    (out / "2025-05-06").mkdir(parents=True)
    (out / "topics").mkdir()
    (out / "index.html").write_text("<!DOCTYPE html><title>Archives</title>", encoding="utf-8")
    (out / "2025-05-06" / "index.html").write_text("<p>Le numéro</p>", encoding="utf-8")
    (out / "2025-05-06" / "digest.txt").write_text("TECH MATIN · Mardi 6 mai\n", encoding="utf-8")
    (out / "topics" / "rgpd.html").write_text("<p>RGPD</p>", encoding="utf-8")
    (out / "feed.xml").write_text('<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"/>')
    (out / "search-index.json").write_text('{"stories": []}', encoding="utf-8")
    (out / ".tech-matin-archive.json").write_text("{}", encoding="utf-8")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "passwords.txt").write_text("hunter2", encoding="utf-8")
    return out


class Served:
    def __init__(self, port: int, log: list[str]):
        self.port = port
        self.log = log

    def get(self, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        """A raw request: the path goes on the wire exactly as given (no client-side cleaning)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.putrequest(method, path, skip_accept_encoding=True)
            connection.endheaders()
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()


class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, text: str) -> int:
        self.lines.append(text)
        return len(text)

    def flush(self) -> None:
        pass


@pytest.fixture
def served(site: Path) -> Iterator[Served]:
    log = _Log()
    server = make_server(site, DEFAULT_TEMPLATES, "127.0.0.1", 0, log_stream=log)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Served(server.server_port, log.lines)
    finally:
        server.shutdown()
        server.server_close()


def test_files_of_the_site_come_with_a_charset_nosniff_and_the_site_policy(served: Served, site: Path) -> None:
    _, script_hash = search_script(DEFAULT_TEMPLATES)
    expected = {
        "/index.html": "text/html; charset=utf-8",
        "/2025-05-06/digest.txt": "text/plain; charset=utf-8",
        "/topics/rgpd.html": "text/html; charset=utf-8",
        "/feed.xml": "application/atom+xml; charset=utf-8",
        "/search-index.json": "application/json; charset=utf-8",
    }
    for path, content_type in expected.items():
        status, headers, body = served.get(path)
        assert status == 200, path
        assert headers["content-type"] == content_type, path
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["content-security-policy"].startswith(content_security_policy(script_hash))
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert body == (site / path.lstrip("/")).read_bytes()
    status, headers, body = served.get("/2025-05-06/digest.txt", method="HEAD")
    assert status == 200 and body == b""
    assert int(headers["content-length"]) == (site / "2025-05-06" / "digest.txt").stat().st_size


def test_a_folder_is_its_index_and_never_a_listing(served: Served, site: Path) -> None:
    status, _, body = served.get("/")
    assert status == 200 and body == (site / "index.html").read_bytes()
    status, _, body = served.get("/2025-05-06/?utm=1")
    assert status == 200 and body == "<p>Le numéro</p>".encode()
    status, headers, _ = served.get("/2025-05-06")
    assert status == 301 and headers["location"] == "/2025-05-06/"
    status, headers, body = served.get("/topics/")  # a folder without index.html
    assert status == 404 and b"rgpd" not in body
    assert headers["x-content-type-options"] == "nosniff" and "content-security-policy" in headers
    # "//topics" must not become a redirect to the host "topics".
    status, headers, _ = served.get("//topics")
    assert status == 301 and headers["location"] == "/topics/"


def test_nothing_outside_the_output_folder_is_served(served: Served, site: Path, tmp_path: Path) -> None:
    (site / "etc").symlink_to("/etc")
    (site / "out-link.txt").symlink_to(tmp_path / "secret" / "passwords.txt")
    (site / "secret-dir").symlink_to(tmp_path / "secret")
    (site / "inside.html").symlink_to(site / "index.html")  # a link that stays in the site is fine
    os.mkfifo(site / "pipe.txt")
    for path in ("/etc/passwd", "/out-link.txt", "/secret-dir/passwords.txt", "/../secret/passwords.txt",
                 "/%2e%2e/secret/passwords.txt", "/..%2fsecret%2fpasswords.txt", "/topics/..%2f..%2fsecret/",
                 "/.tech-matin-archive.json", "/%00", "/index.html%00.txt", "/%ff", "/a\\..\\secret",
                 "/pipe.txt", "//[x", "/" + "a" * 5000):
        status, headers, body = served.get(path)
        assert status in (400, 404, 414), path
        assert b"hunter2" not in body and b"root:" not in body, path
        assert headers.get("x-content-type-options") == "nosniff", path
    status, _, body = served.get("/inside.html")
    assert status == 200 and body == (site / "index.html").read_bytes()
    assert not any("Traceback" in line for line in served.log), served.log


def test_serve_in_a_real_process_binds_localhost_and_refuses_bad_ports(site: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        for port, message in (("99999", "99999"), ("-1", "-1"),
                              (str(taken), f"cannot listen on 127.0.0.1:{taken}")):
            proc = subprocess.run([sys.executable, "-m", "pipeline", "serve", "--config",
                                   str(REPO / "examples" / "demo.yaml"), "--output", str(site), "--port", port],
                                  cwd=REPO, capture_output=True, text=True, timeout=60)
            assert proc.returncode == 2, proc.stderr
            assert message in proc.stderr and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "pipeline", "serve", "--config", str(REPO / "examples" / "demo.yaml"),
                           "--output", str(site / "nope"), "--port", "0"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "no such folder" in proc.stderr and proc.stderr.count("\n") == 1


def test_serve_binds_127_0_0_1_by_default(site: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "serve", "--config",
                             str(REPO / "examples" / "demo.yaml"), "--output", str(site), "--port", "0"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match, line
        port = int(match.group(1))
        served = Served(port, [])
        status, _, body = served.get("/")
        assert status == 200 and body == (site / "index.html").read_bytes()
        status, headers, body = served.get("/2025-05-06/digest.txt")
        assert status == 200 and headers["content-type"] == "text/plain; charset=utf-8"
        assert body.decode("utf-8") == "TECH MATIN · Mardi 6 mai\n"
        # Listening on the loopback address only: another address of this machine is refused.
        outside = _non_loopback_address()
        if outside:
            with pytest.raises(OSError), socket.create_connection((outside, port), timeout=2):
                pass
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


def _non_loopback_address() -> str | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a local address
            address = str(probe.getsockname()[0])
    except OSError:
        return None
    return None if address.startswith("127.") else address


def test_make_server_refuses_a_bad_port_with_one_line(site: Path) -> None:
    with pytest.raises(PipelineError, match=r"^invalid port 70000: must be between 0 and 65535$"):
        make_server(site, DEFAULT_TEMPLATES, "127.0.0.1", 70000)
