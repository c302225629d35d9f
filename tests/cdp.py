"""A minimal Chrome DevTools Protocol client for the headless-browser tests: launch chromium with
a private profile on a free debugging port, open a page, send commands, evaluate JavaScript.
websocket-client is the only dependency (test-only, [serve-test]); no browser download."""
from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run")


def chromium() -> str:
    """The browser, or a loud skip (a failure under CI, where .ci/run installs it)."""
    exe = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
    if exe is None:
        message = ("chromium is not installed, so the web page was NOT tested in a browser; "
                   "install it: apt-get install -y chromium")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return exe


class Browser:
    def __init__(self, profile: Path):
        websocket = pytest.importorskip("websocket", reason="test-only dependency: pip install 'edgekit[serve-test]'")
        profile.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([chromium(), *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
                                      "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"  # chromium writes the port it picked here
        deadline = time.time() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.time() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("chromium did not open its DevTools port within 30 s")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
        self.ids = itertools.count(1)
        self.errors: list[str] = []   # uncaught exceptions and console errors of the page
        self.send("Runtime.enable")
        self.send("Page.enable")

    def send(self, method: str, **params):
        id_ = next(self.ids)
        self.ws.send(json.dumps({"id": id_, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("method") == "Runtime.exceptionThrown":
                self.errors.append(message["params"]["exceptionDetails"].get("text", "exception"))
            elif message.get("method") == "Runtime.consoleAPICalled" and message["params"]["type"] == "error":
                self.errors.append(" ".join(str(a.get("value", a.get("description"))) for a in message["params"]["args"]))
            if message.get("id") == id_:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def eval(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} threw {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20):
        """Poll until the expression is truthy; its value."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = self.eval(expression)
            if value:
                return value
            time.sleep(0.1)
        status = self.eval("document.getElementById('status')?.textContent")
        raise TimeoutError(f"{expression!r} stayed falsy for {timeout} s; page status {status!r}, errors {self.errors}")

    def set_files(self, selector: str, *paths: Path) -> None:
        root = self.send("DOM.getDocument")["root"]["nodeId"]
        node = self.send("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        self.send("DOM.setFileInputFiles", nodeId=node, files=[str(p) for p in paths])

    def close(self) -> None:
        if getattr(self, "ws", None):
            self.ws.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
