"""The demo issue in a real browser: headless Chromium, driven over its DevTools protocol.

The issue page is served from a 127.0.0.1 http.server and loaded at a phone width (375 px) and
a desktop width (1024 px), in light and dark colour schemes: no console error, no horizontal
scrolling, a column of at most 600 px, and every visible text at a WCAG AA contrast with what
it is drawn on. Screenshots go to tmp_path and to /tmp/tech-matin-screens/ for a human to look at.

Skipped when Chromium is absent, unless CI is set: then a missing browser is a failure.
"""

from __future__ import annotations

import datetime as dt
import functools
import http.server
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from chromium import Chromium, Page, find_chromium
from test_issue_demo import DEMO, DemoBuild, build

SCREENS = Path("/tmp/tech-matin-screens")
DATE = dt.date(2025, 5, 6)

pytestmark = pytest.mark.skipif(not DEMO.is_file(), reason="examples/demo.yaml is not there")

# Visible text whose colour contrasts too little with the first opaque background behind it.
CONTRAST_JS = r"""
(() => {
  const parse = (c) => {
    const m = c.match(/rgba?\(([^)]+)\)/);
    if (!m) return null;
    const p = m[1].split(',').map(s => parseFloat(s));
    return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1};
  };
  const lum = (c) => {
    const f = (v) => { v /= 255; return v <= 0.04045 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b);
  };
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c.a > 0.99) return c;
    }
    return {r: 255, g: 255, b: 255, a: 1};
  };
  const bad = [];
  let checked = 0;
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode;
    if (!node.textContent.trim()) continue;
    const el = node.parentElement;
    const box = el.getBoundingClientRect();
    const style = getComputedStyle(el);
    if (box.width === 0 || box.height === 0 || style.visibility === 'hidden' || style.opacity === '0') continue;
    const a = lum(parse(style.color)), b = lum(background(el));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    checked += 1;
    if (ratio < 4.5) bad.push([node.textContent.trim().slice(0, 40), style.color, ratio.toFixed(2)]);
  }
  return {checked, bad};
})()
"""

LAYOUT_JS = r"""
(() => {
  const page = document.querySelector('table.page').getBoundingClientRect();
  return {
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
    column: page.width,
    left: page.left,
    lang: document.documentElement.lang,
    charset: document.characterSet,
    h2: Array.from(document.querySelectorAll('h2')).map(h => h.textContent.trim()),
    h1: document.querySelectorAll('h1').length,
    bodyFont: parseFloat(getComputedStyle(document.querySelector('p.story')).fontSize),
    preheaderShown: document.querySelector('.preheader').getBoundingClientRect().height > 0,
  };
})()
"""


def chromium_or_skip() -> str:
    executable = find_chromium()
    if executable:
        return executable
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail("CI is set but no chromium was found (install the Debian package `chromium`)")
    pytest.skip("chromium is not installed (apt-get install chromium); set CI=true to make this a failure")


@pytest.fixture(scope="module")
def issue_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    demo: DemoBuild = build(tmp_path_factory.mktemp("browser-demo"))

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # keep test output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(demo.output)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{DATE.isoformat()}/index.html"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def page() -> Iterator[Page]:
    with Chromium(chromium_or_skip()) as browser:
        yield browser.new_page()


def keep(screenshot: Path) -> None:
    SCREENS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(screenshot, SCREENS / screenshot.name)


@pytest.mark.parametrize(
    ("width", "dark"), [(375, False), (1024, False), (375, True), (1024, True)],
    ids=["375-light", "1024-light", "375-dark", "1024-dark"],
)
def test_issue_page_in_chromium(page: Page, issue_url: str, tmp_path: Path, width: int, dark: bool) -> None:
    page.errors.clear()
    page.open(issue_url, width, dark=dark)
    layout = page.evaluate(LAYOUT_JS)
    name = f"issue-{DATE.isoformat()}-{width}{'-dark' if dark else ''}.png"
    keep(page.screenshot(tmp_path / name))

    assert page.errors == []
    # No horizontal scrolling. innerWidth must also stay the device width: a phone browser zooms
    # out on a too-wide page, which would make the first comparison pass on its own.
    assert layout["scrollWidth"] <= layout["innerWidth"] == width, layout
    assert layout["column"] <= 600 and layout["column"] >= min(width, 600) - 1, layout
    if width > 600:
        assert layout["left"] > 100, layout  # the column is centred
    assert layout["lang"] == "fr" and layout["charset"] == "UTF-8"
    assert layout["h1"] == 1 and layout["h2"][:2] == ["AU MENU |", "LE FAIT DU JOUR |"]
    assert "ORDRE DU JOUR |" in layout["h2"] and layout["h2"][-1] == "RESTEZ BRANCHÉS |"
    assert layout["bodyFont"] >= 16
    assert not layout["preheaderShown"]
    contrast = page.evaluate(CONTRAST_JS)
    assert contrast["checked"] > 100
    assert contrast["bad"] == [], contrast["bad"]


def test_chromium_sees_the_dark_scheme(page: Page, issue_url: str) -> None:
    """The dark-mode rules are live (the test above would pass on a light page twice otherwise)."""
    colours = {}
    for dark in (False, True):
        page.open(issue_url, 375, dark=dark)
        colours[dark] = page.evaluate("getComputedStyle(document.querySelector('table.page')).backgroundColor")
    assert colours[False] == "rgb(255, 255, 255)"
    assert colours[True] != colours[False]
