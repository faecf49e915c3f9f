"""bench/sink.py as a test helper: a stub SQS endpoint answering every request after a delay."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

SINK = Path(__file__).resolve().parent.parent / "bench" / "sink.py"


@contextmanager
def running_sink(delay: float) -> Iterator[str]:
    """The sink in a process of its own; yields its endpoint (any queue URL under it is accepted)."""
    with tempfile.TemporaryDirectory() as scratch:
        port_file = Path(scratch) / "port"
        process = subprocess.Popen([sys.executable, str(SINK), str(port_file), "--delay", str(delay)])
        try:
            deadline = time.monotonic() + 30
            while not (port_file.exists() and port_file.read_text()):
                assert time.monotonic() < deadline and process.poll() is None, "the sink did not start"
                time.sleep(0.05)
            yield f"http://127.0.0.1:{port_file.read_text()}"
        finally:
            process.terminate()
            process.wait(timeout=10)
