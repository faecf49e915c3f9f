"""A real dashboard server (``sqsmaster dashboard`` in a subprocess) and a headless Chromium to drive it.

Used by the browser tests and by ``python -m tests.dashboard_screenshots``. Chromium and its
driver are Debian's ``chromium`` and ``chromium-driver`` (``tests/browser_setup.sh``, run by
``make test``); :func:`browser_missing` says why a browser cannot run here, for a skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_PATHS = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
DRIVER_PATHS = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]


def _first(paths: list[str]) -> str | None:
    return next((path for path in paths if os.access(path, os.X_OK)), None)


def browser_missing() -> str | None:
    """Why no headless browser can run here (None: one can)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -r requirements-dev.txt)"
    if _first(CHROMIUM_PATHS) is None:
        return "no chromium (tests/browser_setup.sh installs Debian's chromium as root or with sudo)"
    if _first(DRIVER_PATHS) is None and shutil.which("chromedriver") is None:
        return "no chromedriver (tests/browser_setup.sh installs Debian's chromium-driver as root or with sudo)"
    return None


def chrome(width: int = 1400, height: int = 900) -> Any:
    """A headless Chromium driven by selenium (quit it when done)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _first(CHROMIUM_PATHS) or ""
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={width},{height}", "--disable-extensions", "--no-first-run"):
        options.add_argument(argument)
    driver_path = _first(DRIVER_PATHS) or shutil.which("chromedriver")
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(30)
    return driver


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DashboardServer:
    """``sqsmaster dashboard`` on a free loopback port, as an operator starts it; stopped on exit."""

    def __init__(self, store_url: str, queues: list[str], *extra: str, log: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "sqsmaster", "dashboard", "--store", store_url,
                   "--bind", f"127.0.0.1:{self.port}", *[arg for q in queues for arg in ("--queue", q)], *extra]
        self.log_path = log or Path(os.devnull)
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def __enter__(self) -> "DashboardServer":
        deadline = time.monotonic() + 30  # a cold start on a loaded 2-core machine imports flask in seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the dashboard exited with {self.process.returncode}")
            try:
                urllib.request.urlopen(self.url + "/api/config", timeout=2).close()
                return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        self.stop()
        raise AssertionError("the dashboard did not answer within 30 s")

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
