"""Headless Chromium driven over the DevTools protocol, to look at reports as a
person would: load a page, read its console, screenshot it, click on it.

The protocol runs over a pipe (``--remote-debugging-pipe``: we write requests
on the browser's fd 3 and read answers from its fd 4, NUL-terminated JSON), so
no port and no websocket library are needed. The browser gets a fresh profile
and every switch that stops it from reaching the network on its own.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

#: The switches the report tests run Chromium with (no sandbox: we are root in a container).
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-default-apps", "--mute-audio",
    "--hide-scrollbars", "--remote-debugging-pipe",
)

#: Seconds to wait for one protocol answer.
TIMEOUT = 30.0


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("chromium is not installed (scripts/setup.sh installs Debian's chromium)")


@dataclass
class Page:
    """One tab, with what it logged and fetched since it was opened."""

    browser: Browser
    session: str
    console: list[str] = field(default_factory=list)
    """Console messages of level error or warning, and uncaught exceptions."""
    requests: list[str] = field(default_factory=list)
    """URLs the page asked for."""

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.browser.call(method, params, session=self.session)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (JSON-serializable results only)."""
        res = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                             "awaitPromise": True})
        if "exceptionDetails" in res:
            raise AssertionError(f"javascript failed: {res['exceptionDetails']}")
        return res["result"].get("value")

    def screenshot(self, width: int = 1400) -> bytes:
        """A PNG of the whole page at ``width`` CSS pixels."""
        height = int(self.evaluate("Math.ceil(document.documentElement.scrollHeight)"))
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        data = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})["data"]
        return base64.b64decode(data)

    def click(self, x: float, y: float) -> None:
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent",
                      {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})


class Browser:
    """A headless Chromium with a fresh profile in ``profile``; use as a context manager."""

    def __init__(self, profile: Path) -> None:
        self.profile = profile
        self.proc: subprocess.Popen[bytes] | None = None
        self._to: int = -1
        self._from: int = -1
        self._buf = b""
        self._id = 0
        self._pages: dict[str, Page] = {}

    def __enter__(self) -> Browser:
        binary = chromium_binary()
        self.profile.mkdir(parents=True, exist_ok=True)
        their_in, self._to = os.pipe()
        self._from, their_out = os.pipe()

        def wire() -> None:  # in the child: the protocol's fds 3 and 4
            os.dup2(their_in, 3)
            os.dup2(their_out, 4)

        self.proc = subprocess.Popen(  # a test helper: kvmlab.proc cannot pass extra fds
            [binary, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            pass_fds=(3, 4), preexec_fn=wire, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=(self.profile / "chromium.log").open("wb"), start_new_session=True,
        )
        os.close(their_in)
        os.close(their_out)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            with contextlib.suppress(Exception):
                self.call("Browser.close", timeout=5.0)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            # Its helpers (zygote, renderers) are in its session too.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc = None
        for fd in (self._to, self._from):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from], [], [], left)[0]:
                raise TimeoutError("chromium did not answer")
            chunk = os.read(self._from, 1 << 20)
            if not chunk:
                raise EOFError("chromium closed the pipe (see chromium.log in the profile)")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        d: dict[str, Any] = json.loads(msg)
        return d

    def _event(self, d: dict[str, Any]) -> None:
        page = self._pages.get(d.get("sessionId", ""))
        if page is None:
            return
        method, p = d.get("method"), d.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "warning", "assert"):
            page.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p["args"]))
        elif method == "Runtime.exceptionThrown":
            page.console.append(f"exception: {p['exceptionDetails'].get('text')} "
                                f"{p['exceptionDetails'].get('exception', {}).get('description', '')}")
        elif method == "Log.entryAdded" and p["entry"].get("level") in ("error", "warning"):
            page.console.append(f"{p['entry'].get('source')}: {p['entry'].get('text')}")
        elif method == "Network.requestWillBeSent":
            page.requests.append(p["request"]["url"])

    def call(self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None,
             timeout: float = TIMEOUT) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            d = self._read(deadline)
            if d.get("id") == self._id:
                if "error" in d:
                    raise AssertionError(f"{method}: {d['error']}")
                res: dict[str, Any] = d.get("result", {})
                return res
            self._event(d)

    def open(self, url: str, *, width: int = 1400, height: int = 1000) -> Page:
        """A new tab showing ``url``, loaded (its load event fired)."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        self._pages[session] = page
        for domain in ("Runtime", "Page", "Log", "Network"):
            page.call(f"{domain}.enable")
        page.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        page.call("Page.navigate", {"url": url})
        deadline = time.monotonic() + TIMEOUT
        while page.evaluate("document.readyState") != "complete":
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not finish loading")
            time.sleep(0.05)
        return page


@contextlib.contextmanager
def browser(tmp_path: Path) -> Iterator[Browser]:
    with Browser(tmp_path / "chromium-profile") as b:
        yield b


class Shot:
    """A decoded screenshot."""

    def __init__(self, png: bytes) -> None:
        from PIL import Image

        with Image.open(io.BytesIO(png)) as im:
            self.image = im.convert("RGB")
        self.png = png

    def pixel(self, x: float, y: float) -> tuple[int, int, int]:
        """The RGB colour at CSS pixel (x, y) (the page is shot at scale 1)."""
        r, g, b = self.image.getpixel((round(x), round(y)))  # type: ignore[misc]
        return int(r), int(g), int(b)


def hex_rgb(colour: str) -> tuple[int, int, int]:
    c = colour.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def close_to(a: tuple[int, int, int], b: tuple[int, int, int], tol: int = 12) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))
