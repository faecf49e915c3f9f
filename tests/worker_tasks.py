"""Tasks for the worker tests: each records what it did, one JSON line per event, in $SQSMASTER_TEST_RECORD."""

from __future__ import annotations

import json
import os
import time

from sqsmaster import MessageHandler, Retry, exponential, fixed, linear, task


def record(event: str, **fields: object) -> None:
    line = json.dumps({"event": event, "pid": os.getpid(), "at": time.time(), **fields}) + "\n"
    fd = os.open(os.environ["SQSMASTER_TEST_RECORD"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line.encode())  # one write per line: lines from several processes never interleave
    finally:
        os.close(fd)


def runs(task_id: str) -> int:
    try:
        with open(os.environ["SQSMASTER_TEST_RECORD"]) as lines:
            return sum(1 for line in lines if json.loads(line).get("id") == task_id and '"start"' in line)
    except FileNotFoundError:
        return 0


@task
def note(id: str) -> None:
    record("start", id=id)
    record("end", id=id)


@task
def nap(id: str, seconds: float) -> None:
    record("start", id=id)
    time.sleep(seconds)
    record("end", id=id)


@task(retry=fixed(1, max_retries=2))
def fail_fixed(id: str) -> None:
    record("start", id=id)
    raise RuntimeError("always fails")


@task(retry=linear(0, 2, max_retries=2))
def fail_linear(id: str) -> None:
    record("start", id=id)
    raise RuntimeError("always fails")


@task(retry=exponential(1, 1.5, max_retries=2))
def fail_exponential(id: str) -> None:
    record("start", id=id)
    raise RuntimeError("always fails")


@task(retry=fixed(0, max_retries=3), retry_on=(KeyError,))
def fail_not_retried(id: str) -> None:
    record("start", id=id)
    raise ValueError("not worth a retry")


@task
def retry_once(id: str) -> None:
    record("start", id=id)
    if runs(id) < 2:
        raise Retry(delay=1)
    record("end", id=id)


@task(name="handler_task")
class HandlerTask(MessageHandler):
    def run(self) -> None:
        record("start", id=self.kwargs["id"], attempt=self.message.attributes.get("ApproximateReceiveCount"))
        record("end", id=self.kwargs["id"])


@task(name="isolated", isolation="signal")
def isolated(id: str) -> None:
    record("start", id=id, pid_of_task=os.getpid())
    record("end", id=id)


@task(name="stall_once")
class StallOnce(MessageHandler):
    """Hangs for 30 s on its first delivery (to be killed mid-task), finishes at once after."""

    def run(self) -> None:
        record("start", id=self.kwargs["id"], attempt=self.message.attributes.get("ApproximateReceiveCount"))
        if self.message.attributes.get("ApproximateReceiveCount") == "1":
            time.sleep(30)
        record("end", id=self.kwargs["id"])


@task(isolation="process")
def hog(id: str, megabytes: int) -> None:
    """Holds ``megabytes`` of resident memory in its own process for a moment."""
    record("start", id=id)
    block = b"\x01" * (megabytes * 2**20)  # written, so resident
    time.sleep(0.1)
    record("end", id=id, size=len(block))


# -- issue 10: tasks that try to break their worker ------------------------------------------------

def first_attempt(handler: MessageHandler) -> bool:
    return handler.message.attributes.get("ApproximateReceiveCount") == "1"


@task(name="exit_once")
class ExitOnce(MessageHandler):
    """Calls sys.exit(3) on its first delivery (signal isolation: in the worker's own process)."""

    def run(self) -> None:
        record("start", id=self.kwargs["id"])
        if first_attempt(self):
            raise SystemExit(3)
        record("end", id=self.kwargs["id"])


@task(name="os_exit_once")
class OsExitOnce(MessageHandler):
    """os._exit(0) on its first delivery: the worker process ends at once, with code 0."""

    def run(self) -> None:
        record("start", id=self.kwargs["id"])
        if first_attempt(self):
            os._exit(0)
        record("end", id=self.kwargs["id"])


@task(name="segfault_once")
class SegfaultOnce(MessageHandler):
    """Crashes its process with SIGSEGV on its first delivery (a C extension's bug)."""

    def run(self) -> None:
        record("start", id=self.kwargs["id"])
        if first_attempt(self):
            import ctypes

            ctypes.string_at(0)  # reads address 0: SIGSEGV
        record("end", id=self.kwargs["id"])


@task(name="bad_backoff")
class BadBackoff(MessageHandler):
    """Fails, and its own backoff() has a bug: the error escapes the handler's with block."""

    def run(self) -> None:
        record("start", id=self.kwargs["id"])
        raise RuntimeError("fails")

    def backoff(self, receive_count: int) -> int:
        raise ZeroDivisionError("a bug in backoff()")


@task(name="escaping_interrupt")
class EscapingInterrupt(MessageHandler):
    """Fails, and its notify() raises an interrupt (a BaseException, which the handler lets through)."""

    def run(self) -> None:
        record("start", id=self.kwargs["id"])
        raise RuntimeError("fails")

    def notify(self, exception: BaseException, context: object = None) -> None:
        from sqsmaster import HardTimeoutExceeded

        raise HardTimeoutExceeded(1.0)


@task
def fail_always(id: str) -> None:
    """No retry policy: retried with the default backoff until the queue's redrive policy moves it."""
    record("start", id=id)
    raise RuntimeError("always fails")


@task(retry=fixed(0, max_retries=0))
def fail_no_retry(id: str) -> None:
    """Its first failure is its last."""
    record("start", id=id)
    raise RuntimeError("fails once and for all")


@task
def swallow_forever(id: str) -> None:
    """Swallows every interrupt (a bare except in a loop): only the worker's shutdown deadline ends it."""
    record("start", id=id)
    while True:
        try:
            time.sleep(60)
        except BaseException:  # noqa: B036  (what the test is about)
            pass


@task
def gil_sleep(id: str, seconds: int) -> None:
    """Sleeps inside one C call that holds the GIL and that no signal interrupts (like a long native
    computation): no Python code of its process runs meanwhile, not even another thread."""
    import ctypes
    import signal

    record("start", id=id)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2,
                                              signal.SIGALRM})
    ctypes.PyDLL(None).sleep(seconds)
    record("end", id=id)
