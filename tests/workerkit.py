"""Helpers for tests that run real ``sqsmaster worker`` processes against the test server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import boto3

ROOT = Path(__file__).resolve().parent.parent


class WorkerRun:
    """A ``sqsmaster worker`` subprocess whose tasks record to ``record_path``."""

    def __init__(self, url: str, args: list[str], record_path: Path, env: dict[str, str] | None = None) -> None:
        self.record_path = record_path
        self.command = [sys.executable, "-m", "sqsmaster", "worker", url, "--tasks", "tests.worker_tasks", *args]
        environment = {**os.environ, "SQSMASTER_TEST_RECORD": str(record_path), "PYTHONUNBUFFERED": "1",
                       **(env or {})}
        self.log_path = record_path.with_name(f"worker-{time.monotonic_ns()}.log")
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(self.command, cwd=ROOT, env=environment, stdout=self._log,
                                        stderr=subprocess.STDOUT, text=True)

    @property
    def stderr(self) -> str:
        """The worker's log so far."""
        return self.log_path.read_text()

    def wait_until_ready(self, timeout: float = 15) -> None:
        wait_for(lambda: "worker ready" in self.stderr, timeout, "the worker to be ready")

    def wait(self, timeout: float = 30) -> int:
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"worker still running after {timeout}s; its log:\n{self.stderr}") from None
        finally:
            self._log.close()
        return self.process.returncode

    def send_signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.wait()


def records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def starts(path: Path) -> list[str]:
    """Task ids in the order their runs started."""
    return [line["id"] for line in records(path) if line["event"] == "start"]


def ends(path: Path) -> list[str]:
    return [line["id"] for line in records(path) if line["event"] == "end"]


def wait_for(condition: Callable[[], Any], timeout: float = 10, message: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


def submit(client: Any, url: str, task: str, **kwargs: Any) -> str:
    body = json.dumps({"task": task, "kwargs": kwargs})
    return str(client.send_message(QueueUrl=url, MessageBody=body)["MessageId"])


def bodies(client: Any, url: str) -> list[str]:
    """Bodies of every visible message, received and deleted (for a DLQ's contents)."""
    found = []
    while True:
        batch = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not batch:
            return sorted(found)
        for message in batch:
            found.append(message["Body"])
            client.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def client_for(endpoint: str) -> Any:
    return boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")


def worker_factory(tmp_path: Path, fast: list[str]) -> Any:
    """A fixture body: ``start(url, *args)`` launches ``sqsmaster worker`` with ``fast`` options first;
    every worker still alive at the end is killed."""
    runs: list[WorkerRun] = []

    def start(url: str, *args: str) -> WorkerRun:
        run = WorkerRun(url, [*fast, *args], tmp_path / "records.jsonl")
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.kill()
