"""The demo behind ``make demo``: the supervisor's promises, shown on an embedded SQS server.

Four tasks: one that runs longer than its visibility timeout (heartbeats keep it
hidden), one stuck in a loop that even catches ``Exception`` (stopped at its hard
timeout, retried, then moved to the dead-letter queue), one that fails once and
is retried, and a quick one. It prints what happened to each.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any, Callable

from .embedded import EmbeddedSQS
from .handler import MessageHandler
from .manager import TaskManager

SQS_TIMEOUT = 3
ALARM_TIMEOUT = 1.5
HARD_TIMEOUT = 2.5
#: Every task but the stuck one gets room to finish.
DEFAULT_HARD_TIMEOUT = 60


class DemoHandler(MessageHandler):
    """Runs the demo's tasks; ``kind`` picks the behaviour."""

    def run(self) -> None:
        kind = self.kwargs["kind"]
        if kind == "long":
            time.sleep(self.kwargs["seconds"])
        elif kind == "hang":
            deadline = time.monotonic() + 3600
            while time.monotonic() < deadline:
                try:
                    sum(range(10_000))
                except Exception:  # cannot swallow the hard timeout: it is a BaseException
                    pass
        elif kind == "flaky":
            if int(self.message.attributes.get("ApproximateReceiveCount", "1")) < 2:
                raise RuntimeError("transient failure on the first attempt")


def run_demo(out: Callable[[str], Any] = print) -> int:
    """Run the demo; returns 0 when every task ended as expected."""
    logging.getLogger("sqsmaster").setLevel(logging.CRITICAL)
    started = time.monotonic()
    with EmbeddedSQS() as server:
        dlq = server.create_queue("demo-dead-letters")
        url = server.create_queue("demo-tasks", visibility_timeout=SQS_TIMEOUT, dead_letter_url=dlq,
                                  max_receive_count=2)
        out(f"embedded SQS server at {server.endpoint}; queue {url}")
        tm = TaskManager(url, sender_name="sqsmaster-demo")
        submitted = {
            tm.submit("train", kind="long", seconds=3 * SQS_TIMEOUT)["MessageId"]: "train (9s, visibility 3s)",
            tm.submit("solve", kind="hang")["MessageId"]: f"solve (hangs, hard timeout {HARD_TIMEOUT}s)",
            tm.submit("fetch", kind="flaky")["MessageId"]: "fetch (fails once)",
            tm.submit("resize", kind="quick")["MessageId"]: "resize (quick)",
        }
        history: dict[str, list[str]] = defaultdict(list)
        heartbeats: dict[str, int] = defaultdict(int)
        for task, kwargs, message in tm.task_generator(wait_time=1, sqs_timeout=SQS_TIMEOUT, until_empty=True):
            with DemoHandler(message, sqs_timeout=SQS_TIMEOUT, alarm_timeout=ALARM_TIMEOUT,
                             hard_timeout=HARD_TIMEOUT if task == "solve" else DEFAULT_HARD_TIMEOUT,
                             **kwargs) as handler:
                handler.run()
            history[message.message_id].append(f"{handler.outcome} ({handler.runtime:.1f}s)")
            heartbeats[message.message_id] += handler.lease.extensions if handler.lease else 0
            out(f"  {task:<7} attempt {message.receive_count}: {handler.outcome}")
        dead = {m.message_id for m in TaskManager(dlq).queue.receive(10, 1, 30)}
        out("")
        out(f"{'task':<34} {'attempts':>8} {'heartbeats':>10}  outcome")
        ok = True
        for message_id, label in submitted.items():
            attempts = history[message_id]
            final = "dead-lettered" if message_id in dead else "deleted" if attempts[-1].startswith("succeeded") \
                else "left in queue"
            out(f"{label:<34} {len(attempts):>8} {heartbeats[message_id]:>10}  {' -> '.join(attempts)}; {final}")
            expected = "dead-lettered" if label.startswith("solve") else "deleted"
            ok = ok and final == expected
        out(f"\nfinished in {time.monotonic() - started:.1f}s; queue now: "
            f"{tm.attributes()['ApproximateNumberOfMessages']} visible, dead-letter queue: {len(dead)}")
        tm.close()
    return 0 if ok else 1
