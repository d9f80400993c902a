"""Open a local HTML file in the system's headless Chromium and report what a reader would see.

Chromium is driven through the DevTools protocol over ``--remote-debugging-pipe`` (JSON messages ending in
a NUL byte, commands on the child's fd 3, replies and events on its fd 4), so nothing beyond the standard
library and the browser is needed. Host names resolve to nothing, so a page that reaches for the network
fails loudly instead of depending on it.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
# What counts as a console error: console.error/assert, uncaught exceptions, and browser log entries
# (failed loads, blocked resources) at level error.
ERROR_CONSOLE_TYPES = {"error", "assert"}
# Pages are small; this only stops a wedged browser from hanging the test run.
DEADLINE_S = 120


def find_browser() -> str | None:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class PageReport:
    text: str
    images: list[dict]
    errors: list[str] = field(default_factory=list)


class _Pipe:
    def __init__(self, write_fd: int, read_fd: int, deadline: float):
        self.write_fd, self.read_fd, self.deadline = write_fd, read_fd, deadline
        self.buffer = b""
        self.events: list[dict] = []
        self.next_id = 0

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.write_fd, json.dumps(message).encode() + b"\0")
        return self.next_id

    def receive(self) -> dict:
        while b"\0" not in self.buffer:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.read_fd], [], [], remaining)[0]:
                raise TimeoutError("chromium did not answer")
            chunk = os.read(self.read_fd, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        sent = self.send(method, params, session)
        while True:
            message = self.receive()
            if message.get("id") == sent:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str) -> None:
        while True:
            message = self.receive()
            self.events.append(message)
            if message.get("method") == method:
                return


def _errors(events: list[dict]) -> list[str]:
    errors = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ERROR_CONSOLE_TYPES:
            errors.append(
                "console: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
            )
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            thrown = details.get("exception", {}).get("description", "")
            errors.append(f"exception: {details.get('text', '')} {thrown}".strip())
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            errors.append("log: " + params["entry"].get("text", ""))
    return errors


def render(page: Path, browser: str) -> PageReport:
    """Load ``page`` in headless ``browser``; its visible text, its images' load state and any console errors."""
    commands_read, commands_write = os.pipe()
    events_read, events_write = os.pipe()

    def connect_fds() -> None:
        # The browser expects the pipe on fds 3 and 4; dup first so that no source fd is overwritten early.
        # A dup may land on 3 or 4 itself (when the parent's fds there are close-on-exec), and dup2 onto
        # the same fd changes nothing, so the fds are made inheritable explicitly.
        source_in, source_out = os.dup(commands_read), os.dup(events_write)
        os.dup2(source_in, 3)
        os.dup2(source_out, 4)
        os.set_inheritable(3, True)
        os.set_inheritable(4, True)

    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.Popen(
            [
                browser,
                "--headless",
                "--no-sandbox",  # root in CI containers
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--host-resolver-rules=MAP * ~NOTFOUND",
                "--remote-debugging-pipe",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            preexec_fn=connect_fds,
            close_fds=False,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(commands_read)
        os.close(events_write)
        pipe = _Pipe(commands_write, events_read, time.monotonic() + DEADLINE_S)
        try:
            target = pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Runtime", "Log", "Page"):
                pipe.call(f"{domain}.enable", session=session)
            pipe.call("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
            pipe.wait_for("Page.loadEventFired")
            script = (
                "JSON.stringify({text: document.body.innerText, images: Array.from(document.images).map("
                "i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight}))})"
            )
            value = pipe.call(
                "Runtime.evaluate", {"expression": script, "returnByValue": True}, session=session
            )
            seen = json.loads(value["result"]["value"])
            try:
                pipe.call("Browser.close")
            except (OSError, RuntimeError, TimeoutError):
                pass
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            os.close(commands_write)
            os.close(events_read)
    return PageReport(seen["text"], seen["images"], _errors(pipe.events))
