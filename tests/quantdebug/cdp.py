"""Headless Chromium driven over the DevTools protocol, with the standard library only.

Model Explorer is a single-page app that loads the model and node data after the page's load
event, so `chromium --dump-dom` (taken at load) sees an empty shell, and `--virtual-time-budget`
never settles (the app keeps a server-sent-events stream open). So the test opens the page with
--remote-debugging-port, polls `document.body.innerText` until the overlay's values appear, and
takes the screenshot then. No websocket package is installed, hence the few lines of RFC 6455
framing below (client frames masked, text frames only).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import subprocess
import time
import urllib.request
from pathlib import Path


class Page:
    def __init__(self, ws_url: str) -> None:
        host_port, path = ws_url.removeprefix("ws://").split("/", 1)
        host, port = host_port.split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=60)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        assert b" 101 " in head.split(b"\r\n")[0], head
        self.next_id = 0

    def _send(self, text: str) -> None:
        data = text.encode()
        mask = os.urandom(4)
        n = len(data)
        hdr = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else
                               bytes([0x80 | 126]) + struct.pack(">H", n) if n < 65536 else
                               bytes([0x80 | 127]) + struct.pack(">Q", n))
        self.sock.sendall(hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("devtools socket closed")
            buf += chunk
        return buf

    def _recv(self) -> str:
        parts = b""
        while True:
            b0, b1 = self._recv_exact(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._recv_exact(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._recv_exact(8))[0]
            parts += self._recv_exact(n)
            if b0 & 0x80:
                return parts.decode()

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self._send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self._recv())
            if msg.get("id") == self.next_id:
                return msg.get("result", {})

    def text(self) -> str:
        r = self.call("Runtime.evaluate", expression="document.body ? document.body.innerText : ''")
        return r.get("result", {}).get("value", "") or ""


def open_page(chromium: str, url: str, profile: Path, port: int,
              size: tuple[int, int] = (1400, 900)) -> tuple[subprocess.Popen, Page]:
    proc = subprocess.Popen([chromium, "--headless", "--no-sandbox", "--enable-unsafe-swiftshader",
                             "--no-first-run", "--disable-background-networking", "--disable-sync",
                             f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
                             f"--remote-debugging-port={port}", url],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while True:
        try:
            targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=5))
            page = next(t for t in targets if t.get("type") == "page")
            return proc, Page(page["webSocketDebuggerUrl"])
        except Exception:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                raise
            time.sleep(0.5)


def wait_for_text(page: Page, needles: list[str], timeout: float = 90) -> str:
    deadline = time.time() + timeout
    text = ""
    while time.time() < deadline:
        text = page.text()
        if all(n in text for n in needles):
            return text
        time.sleep(1)
    return text


def screenshot(page: Page, path: Path) -> Path:
    data = page.call("Page.captureScreenshot", format="png")["data"]
    path.write_bytes(base64.b64decode(data))
    return path
