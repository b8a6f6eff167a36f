"""A one-item local RSS feed and a sources.yaml pointing at it, for tests that need a real
config and a real build but not the demo feeds."""

from __future__ import annotations

from pathlib import Path

RSS = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Exemple</title><link>https://example.org/</link>
<item><title>RGPD : la CNIL sanctionne un courtier en données</title><link>https://example.org/a</link>
<description>La CNIL inflige une amende au titre du RGPD à un courtier en données.</description>
<pubDate>Mon, 05 May 2025 18:00:00 +0200</pubDate></item>
</channel></rss>
"""


def write_config(folder: Path, feed_url: str = "feed.xml", schedule: str = "") -> Path:
    """feed.xml (RSS above) and sources.yaml in `folder`; store in data/, site in out/."""
    (folder / "feed.xml").write_text(RSS, encoding="utf-8")
    config = folder / "sources.yaml"
    config.write_text("storage:\n  db: data/archive.sqlite3\n  output: out\n"
                      + (f"schedule:\n{schedule}" if schedule else "")
                      + f"feeds:\n  - name: Exemple\n    url: {feed_url}\n", encoding="utf-8")
    return config
