"""A plain consumer process for the durable-queue tests (the worker is not this file's business).

Usage: python -m tests.durable_consumer URL EVENTS JOBLOG [--until-empty] [--max-receive-count N]

Runs tasks from URL through TaskManager + MessageHandler; appends "pid message_id task event"
lines to EVENTS (event: start, done) and one job record per attempt to JOBLOG.
Tasks: Quick(), Sleep(seconds), Fail(seconds), Stall() (30 s on its first attempt, instant after).
"""

from __future__ import annotations

import argparse
import os
import time

from sqsmaster import MessageHandler, TaskManager
from sqsmaster.worker.jobs import JobLog, record_from_handler


class Runner(MessageHandler):
    def run(self) -> None:
        task, events = self.kwargs.pop("task"), self.kwargs.pop("events")
        note(events, self.message_id, task, "start")
        stall = task == "Stall" and self.message.receive_count == 1
        time.sleep(30 if stall else self.kwargs.get("seconds", 0))
        if task == "Fail":
            raise RuntimeError("this task always fails")
        note(events, self.message_id, task, "done")


def note(path: str, message_id: str | None, task: str, event: str) -> None:
    with open(path, "a") as file:
        file.write(f"{os.getpid()} {message_id} {task} {event}\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("events")
    parser.add_argument("job_log")
    parser.add_argument("--until-empty", action="store_true")
    parser.add_argument("--max-receive-count", type=int)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--sqs-timeout", type=int, default=2)
    args = parser.parse_args()
    log = JobLog(args.job_log)
    manager = TaskManager(args.url)
    for task, kwargs, message in manager.task_generator(wait_time=1, sqs_timeout=args.sqs_timeout,
                                                        max_messages=args.batch, until_empty=args.until_empty):
        with Runner(message, sqs_timeout=args.sqs_timeout, alarm_timeout=0.5, hard_timeout=60, task=task,
                    events=args.events, **kwargs) as handler:
            handler.run()
        log.append(record_from_handler(handler, task=task, max_receive_count=args.max_receive_count))


if __name__ == "__main__":
    main()
