"""Headless Chromium, driven over the DevTools protocol: a page as a person would see it.

Playwright and Selenium download browsers of their own; this uses the OS package
``chromium`` (``tests/binaries.py`` skips without it locally and fails under CI) and
speaks the DevTools protocol over a websocket (``websockets``). Chromium is started
with ``--remote-debugging-port=0`` and writes the port it chose to
``DevToolsActivePort`` in its profile directory.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import shutil
import struct
import subprocess
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from binaries import require_binary
from processes import stop_process
from websockets.sync.client import ClientConnection, connect


class Page:
    """One browser tab: send DevTools commands, keep the events that arrive meanwhile."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        command_id = next(self.ids)
        self.ws.send(json.dumps({"id": command_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no answer to {method} within {timeout} s")
            message = json.loads(self.ws.recv(timeout=left))
            if message.get("id") == command_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))
            if "method" in message:
                self.events.append(message)

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0) -> Any:
        """Evaluate ``expression`` until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"still falsy after {timeout} s: {expression}")
            time.sleep(0.1)

    def screenshot(self) -> bytes:
        return base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"])

    def requested_urls(self) -> list[str]:
        return [
            e["params"]["request"]["url"]
            for e in self.events
            if e.get("method") == "Network.requestWillBeSent"
        ]


@contextlib.contextmanager
def headless_page(width: int = 1280, height: int = 900) -> Iterator[Page]:
    """A fresh headless Chromium (its own profile, no network needed) and one blank tab."""
    binary = require_binary("chromium", package="chromium")
    profile = Path(tempfile.mkdtemp(prefix="entitlements-chromium-"))
    log_path = profile / "chromium-stderr.log"  # a file, not a pipe nobody drains
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                str(binary),
                "--headless=new",
                "--no-sandbox",  # as root (CI) Chromium refuses to start with its sandbox
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                err = log_path.read_text(errors="replace")
                raise RuntimeError(f"chromium did not start its DevTools endpoint\n{err[-2000:]}")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10, trust_env=False)
        page_url = next(t["webSocketDebuggerUrl"] for t in targets.json() if t["type"] == "page")
        with connect(page_url, max_size=None, open_timeout=10) as ws:
            page = Page(ws)
            page.send("Page.enable")
            page.send("Runtime.enable")
            page.send("Network.enable")
            page.send(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=height,
                deviceScaleFactor=1,
                mobile=False,
            )
            yield page
    finally:
        stop_process(proc, timeout=10)
        shutil.rmtree(profile, ignore_errors=True)


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR; raises if ``png`` is no PNG."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    width, height = struct.unpack(">II", png[16:24])
    return int(width), int(height)


def png_distinct_bytes(png: bytes) -> int:
    """How many distinct byte values the image data holds: a blank page has a handful,
    a page with text, lines and colours nearly all 256."""
    data, pos = b"", 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind = png[pos + 4 : pos + 8]
        if kind == b"IDAT":
            data += png[pos + 8 : pos + 8 + length]
        pos += 12 + length
    return len(set(zlib.decompress(data)))
