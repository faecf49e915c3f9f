"""Stress for tests/test_deadlines.py: many handlers whose task ends within ±1 ms of its deadline.

Run as ``python -m tests.deadline_stress N`` (a process of its own, so a hang or a stray
SIGALRM cannot take the test run down with it); prints one JSON summary line.
"""

from __future__ import annotations

import json
import random
import signal
import sys
import time
from typing import Any

from sqsmaster import LocalQueue, MessageHandler, TaskManager
from sqsmaster.lease import default_backoff

#: The hard timeout of each handler (s): short, so thousands run in seconds.
HARD_TIMEOUT = 0.005
#: The task ends this close to its deadline, either side (s).
SPREAD = 0.001


class Recording(LocalQueue):
    """A LocalQueue that records what a server would see: visibility changes and deletes per handle."""

    changes: dict[str, list[int]] = {}
    deleted: set[str] = set()

    def change_visibility(self, receipt_handle: str, visibility_timeout: int, message_id: Any = None) -> None:
        Recording.changes.setdefault(receipt_handle, []).append(visibility_timeout)
        super().change_visibility(receipt_handle, visibility_timeout, message_id)

    def delete(self, receipt_handle: str, message_id: Any = None) -> None:
        Recording.deleted.add(receipt_handle)
        super().delete(receipt_handle, message_id)


class EndsAtTheDeadline(MessageHandler):
    """Spins (pure Python, so the signal lands at once) until ``end``, around its deadline."""

    def run(self) -> None:
        end = self.kwargs["end"]
        while time.monotonic() < end:
            pass


def main(count: int) -> dict[str, Any]:
    stray: list[int] = []
    signal.signal(signal.SIGALRM, lambda signum, frame: stray.append(signum))
    sentinel = signal.getsignal(signal.SIGALRM)
    tm = TaskManager("mem://deadline-stress", queue_constructor=Recording)
    tm.submit_many(("T", {"i": i}) for i in range(count))
    received = tm.task_generator(wait_time=0, sqs_timeout=30, max_messages=10)
    summary: dict[str, Any] = {"handlers": 0, "escaped": [], "handler_not_restored": 0, "timer_left_armed": 0,
                               "outcomes": {}, "timed_out_not_handed_back": [], "succeeded_not_deleted": [],
                               "deleted_after_timeout": []}
    rng = random.Random(9)
    for _ in range(count):
        _, kwargs, message = next(received)
        started = time.monotonic()
        try:
            with EndsAtTheDeadline(message, sqs_timeout=30, alarm_timeout=10, hard_timeout=HARD_TIMEOUT,
                                   end=started + HARD_TIMEOUT + rng.uniform(-SPREAD, SPREAD), **kwargs) as handler:
                handler.run()
        except BaseException as exc:  # nothing may escape the with block
            summary["escaped"].append(repr(exc))
            continue
        summary["handlers"] += 1
        summary["handler_not_restored"] += signal.getsignal(signal.SIGALRM) is not sentinel
        summary["timer_left_armed"] += signal.getitimer(signal.ITIMER_REAL)[0] > 0
        outcome = str(handler.outcome)
        summary["outcomes"][outcome] = summary["outcomes"].get(outcome, 0) + 1
        handle = message.receipt_handle
        if outcome == "succeeded" and handle not in Recording.deleted:
            summary["succeeded_not_deleted"].append(handle)
        if outcome == "timed out":
            if Recording.changes.get(handle, [])[-1:] != [default_backoff(message.receive_count)]:
                summary["timed_out_not_handed_back"].append(handle)
            if handle in Recording.deleted:
                summary["deleted_after_timeout"].append(handle)
    time.sleep(0.1)  # a tick left behind by any handler would land here
    summary["stray_ticks"] = len(stray)
    return summary


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]))), flush=True)
