"""A small client of headless Chromium's DevTools protocol, for the real-browser tests.

Starts `chromium --headless` with a fresh profile and an ephemeral debugging port, opens one
tab and drives it over its WebSocket (websocket-client): viewport size, colour scheme,
navigation, JavaScript evaluation, full-page screenshots, and every console error or uncaught
exception the page produced. Nothing here downloads anything; the browser is the system one.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websocket

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
)
STARTUP_SECONDS = 20.0  # a limit for failure only: a healthy start takes about a second
CALL_SECONDS = 15.0


def find_chromium() -> str | None:
    """The system Chromium: $CHROMIUM (None if it is not an executable), else `chromium` /
    `chromium-browser` on PATH."""
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


class BrowserError(RuntimeError):
    pass


@dataclass
class Page:
    """One tab. `errors` collects console errors, uncaught exceptions and failed loads."""

    socket: websocket.WebSocket
    errors: list[str] = field(default_factory=list)
    _next_id: int = 0
    _events: list[dict[str, Any]] = field(default_factory=list)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        call_id = self._next_id
        self.socket.send(json.dumps({"id": call_id, "method": method, "params": params}))
        deadline = time.monotonic() + CALL_SECONDS
        while time.monotonic() < deadline:
            message = json.loads(self.socket.recv())
            if message.get("id") == call_id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._note(message)
        raise BrowserError(f"{method}: no answer within {CALL_SECONDS} s")

    def wait_for(self, event: str, timeout: float = CALL_SECONDS) -> dict[str, Any]:
        for index, seen in enumerate(self._events):
            if seen.get("method") == event:
                return self._events.pop(index)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = json.loads(self.socket.recv())
            self._note(message)
            if message.get("method") == event:
                self._events.remove(message)
                return message
        raise BrowserError(f"no {event} within {timeout:g} s")

    def _note(self, message: dict[str, Any]) -> None:
        method = message.get("method")
        params = message.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.errors.append("console: " + " ".join(str(a.get("value", a.get("description", "")))
                                                       for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.errors.append("exception: " + str(details.get("exception", {}).get("description", details)))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self.errors.append(f"log: {entry.get('text')} {entry.get('url', '')}".strip())
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            self.errors.append(f"network: {params.get('errorText')} ({params.get('type')})")
        if method:
            self._events.append(message)

    def open(self, url: str, width: int, height: int = 900, dark: bool = False) -> None:
        """Load `url` in a viewport `width` CSS pixels wide, as a phone when narrow."""
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=width < 600)
        self.call("Emulation.setEmulatedMedia", media="screen",
                  features=[{"name": "prefers-color-scheme", "value": "dark" if dark else "light"}])
        self._events.clear()
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")

    def click_and_wait(self, selector: str, timeout: float = CALL_SECONDS) -> None:
        """Click the element `selector` names (a link or a form's button) and wait for the page it
        leads to (at most `timeout` seconds: a form whose answer builds an issue may need more on a
        loaded machine). The element must exist: a missing one is an error, not a silent no-op."""
        self._events.clear()
        if not self.evaluate(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
                             "if (!e) return false; e.click(); return true; })()"):
            raise BrowserError(f"nothing matches {selector!r} on {self.evaluate('location.href')}")
        self.wait_for("Page.loadEventFired", timeout)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page (not only the viewport)."""
        metrics = self.call("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data["data"]))
        return path


class Chromium:
    """`with Chromium(path) as browser: page = browser.new_page()`; the process and its fresh
    profile folder are removed on exit."""

    def __init__(self, executable: str):
        self.executable = executable
        self.profile = Path(tempfile.mkdtemp(prefix="tech-matin-chromium-"))
        self.log = self.profile.with_name(self.profile.name + ".log")
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.pages: list[Page] = []

    def __enter__(self) -> Chromium:
        self._log_handle = self.log.open("wb")
        self.process = subprocess.Popen(
            [self.executable, *FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-address=127.0.0.1",
             "--remote-debugging-port=0", "about:blank"],
            # stderr to a file, not a pipe nobody reads (a full pipe would block the browser)
            stdout=subprocess.DEVNULL, stderr=self._log_handle,
        )
        # Chromium writes its ephemeral port to <profile>/DevToolsActivePort once it listens.
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrowserError(f"chromium exited with {self.process.returncode}: "
                                   f"{self.log.read_text(errors='replace')[-2000:]}")
            if port_file.is_file():
                first_line = port_file.read_text().splitlines()[:1]
                if first_line and re.fullmatch(r"\d+", first_line[0]):
                    self.port = int(first_line[0])
                    return self
            time.sleep(0.05)
        self.__exit__()
        raise BrowserError(f"chromium did not open its DevTools port within {STARTUP_SECONDS} s")

    def new_page(self) -> Page:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/json/new?about:blank", method="PUT")
        with urllib.request.urlopen(request, timeout=CALL_SECONDS) as response:
            target = json.load(response)
        socket = websocket.create_connection(target["webSocketDebuggerUrl"], timeout=CALL_SECONDS,
                                             suppress_origin=True)
        page = Page(socket)
        for domain in ("Page", "Runtime", "Log", "Network"):
            page.call(f"{domain}.enable")
        self.pages.append(page)
        return page

    def __exit__(self, *exc_info: object) -> None:
        for page in self.pages:
            page.socket.close()
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self._log_handle.close()
        shutil.rmtree(self.profile, ignore_errors=True)
        self.log.unlink(missing_ok=True)
