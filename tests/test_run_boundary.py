"""No feed can end a run: whatever one feed provokes while it is fetched or parsed becomes that
feed's one-line failure, the other feeds are stored and the issue is built (issue 16, point 1)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from tests.localfeed import RSS

# A character reference to a lone surrogate sends feedparser's loose parser into a
# UnicodeEncodeError; the feed is either read without it or failed, never the run.
SURROGATE_RSS = RSS.replace("un courtier en données</title>", "un courtier &#xD800; en données</title>")


@pytest.fixture
def server() -> Iterator[HTTPServer]:
    server = HTTPServer(host="127.0.0.1", port=0)
    server.start()
    yield server
    server.clear()
    server.stop()


def _config(folder: Path, moved_url: str) -> Path:
    (folder / "good.xml").write_text(RSS, encoding="utf-8")
    (folder / "surrogate.xml").write_text(SURROGATE_RSS, encoding="utf-8")
    config = folder / "sources.yaml"
    config.write_text(
        "storage:\n  db: data/archive.sqlite3\n  output: out\nfeeds:\n"
        f"  - {{id: mailto, name: Redirige, url: '{moved_url}'}}\n"
        "  - {id: surrogate, name: Substitut, url: surrogate.xml}\n"
        "  - {id: good, name: Exemple, url: good.xml}\n", encoding="utf-8")
    return config


def test_a_redirect_to_mailto_fails_that_feed_and_the_run_goes_on(tmp_path: Path, server: HTTPServer, cli) -> None:
    server.expect_request("/feed.xml").respond_with_data(
        "", status=302, headers={"Location": "mailto:webmaster@example.org"})
    config = _config(tmp_path, server.url_for("/feed.xml"))
    common = ["--config", config, "--topics", Path(__file__).resolve().parents[1] / "topics.yaml"]

    for attempt in (1, 2):  # the second run must not crash either: the health was recorded
        result = cli("run", "--date", "2025-05-06", *common)
        assert result.code == 0, result.err
        assert "Traceback" not in result.err
        assert ("warning: feed mailto (Redirige): redirect to a non-HTTP URL: mailto:webmaster@example.org"
                in result.err.splitlines())
        assert "2 feeds read" in result.out or "1 feeds read" in result.out
        listing = cli("feeds", "list", *common)
        assert listing.code == 0, listing.err
        [health] = [line for line in listing.out.splitlines() if line.startswith("mailto ")]
        assert health.split()[1:3] == ["failed", str(attempt)]  # status, consecutive failures
        assert health.endswith("redirect to a non-HTTP URL: mailto:webmaster@example.org")
        [good] = [line for line in listing.out.splitlines() if line.startswith("good ")]
        assert good.split()[2] == "0" and good.split()[-2] == "1"  # no failure, one item seen
    assert (tmp_path / "out" / "2025-05-06" / "index.html").is_file()
    surrogate = [line for line in result.err.splitlines() if "feed surrogate" in line]
    assert all(line.count("\n") == 0 and "Traceback" not in line for line in surrogate)
