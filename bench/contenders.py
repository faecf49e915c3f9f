"""One benchmark measurement in a process of its own; prints one JSON line.

``python bench/contenders.py KIND NAME URL COUNT`` where KIND is ``submit``,
``drain`` or ``rss`` and NAME a contender below. The parent (bench/run.py) sets the
endpoint in ``AWS_ENDPOINT_URL`` and controls the queue's depth. CPU is this
process's (and its children's) CPU time during the measured section only.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import threading
import time
from functools import partial
from typing import Any, Callable, Iterator

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the sqsmaster checkout
sys.path.insert(0, HERE)  # tq_tasks, worker_tasks

ATTRIBUTES = {"service_name": {"StringValue": "bench", "DataType": "String"}}


def endpoint() -> str:
    return os.environ["AWS_ENDPOINT_URL"]


def boto_client() -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("sqs", endpoint_url=endpoint(), region_name="us-east-1",
                        config=Config(max_pool_connections=50, retries={"mode": "standard"}))


def body(i: int) -> str:
    return json.dumps({"task": "noop", "kwargs": {"i": i}})


def queue_name(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def task_queue(url: str, threads: int = 40) -> Any:
    from taskqueue import TaskQueue

    # task-queue treats a non-AWS URL as a queue *name* and looks it up with GetQueueUrl; extra kwargs go to
    # boto3.client, so endpoint_url points it at the local server (AWS_ENDPOINT_URL would do as well).
    return TaskQueue(f"sqs://{queue_name(url)}", n_threads=threads, progress=False, endpoint_url=endpoint(),
                     region_name="us-east-1")


def tq_tasks(count: int) -> Iterator[Any]:
    from tq_tasks import noop

    return (partial(noop, i) for i in range(count))


# -- submit ------------------------------------------------------------------------------------------

def submit_raw(url: str, count: int, threads: int = 1) -> int:
    """Plain boto3: batches of 10 (the same body and attribute as sqsmaster's), ``threads`` sending at once.

    The threads share one client (boto3 clients are thread-safe) whose pool holds a connection per thread;
    thread ``k`` sends batches ``k, k + threads, ...``.
    """
    client = boto_client()

    def send(first: int) -> None:
        for start in range(first * 10, count, threads * 10):
            client.send_message_batch(QueueUrl=url, Entries=[
                {"Id": str(i - start), "MessageBody": body(i), "MessageAttributes": ATTRIBUTES}
                for i in range(start, min(start + 10, count))])

    if threads == 1:
        send(0)
        return count
    workers = [threading.Thread(target=send, args=(k,)) for k in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return count


def submit_sqsmaster(url: str, count: int) -> int:
    from sqsmaster import TaskManager

    return TaskManager(url, sender_name="bench").submit_many(("noop", {"i": i}) for i in range(count))


def submit_task_queue(url: str, count: int, threads: int = 40) -> int:
    return int(task_queue(url, threads).insert(tq_tasks(count), total=count))


def submit_sqstaskmaster(url: str, count: int) -> int:
    from sqstaskmaster.task_manager import TaskManager

    manager = TaskManager(url, sender_name="bench")
    for i in range(count):
        manager.submit("noop", i=i)
    return count


# -- drain -------------------------------------------------------------------------------------------

def drain_raw(url: str, count: int) -> int:
    client = boto_client()
    done = 0
    while done < count:
        messages = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                          VisibilityTimeout=30).get("Messages", [])
        if messages:
            client.delete_message_batch(QueueUrl=url, Entries=[
                {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)])
            done += len(messages)
    return done


def drain_sqsmaster(url: str, count: int) -> int:
    from sqsmaster import MessageHandler, TaskManager

    class Noop(MessageHandler):
        def run(self) -> None:
            pass

    done = 0
    for _task, kwargs, message in TaskManager(url).task_generator(wait_time=1, sqs_timeout=30, max_messages=10):
        with Noop(message, sqs_timeout=30, alarm_timeout=25, hard_timeout=60, **kwargs) as handler:
            handler.run()
        done += 1
        if done >= count:
            return done
    return done


def drain_sqstaskmaster(url: str, count: int) -> int:
    from sqstaskmaster.message_handler import MessageHandler
    from sqstaskmaster.task_manager import TaskManager

    class Noop(MessageHandler):
        def run(self) -> None:
            pass

        def running(self) -> bool:
            return True

        def notify(self, exception: BaseException, context: Any = None) -> None:
            pass

    done = 0
    for _task, _kwargs, message in TaskManager(url).task_generator(wait_time=1, sqs_timeout=30):
        with Noop(message, sqs_timeout=30, alarm_timeout=25, hard_timeout=60) as handler:
            handler.run()
        done += 1
        if done >= count:
            return done
    return done


def drain_task_queue(url: str, count: int) -> int:
    import tq_tasks  # noqa: F401  (registers the queueable function poll runs)

    return int(task_queue(url).poll(lease_seconds=30, stop_fn=lambda executed: executed >= count))


def drain_worker(isolation: str, url: str, count: int) -> int:
    command = [sys.executable, "-m", "sqsmaster", "worker", url, "--tasks", "worker_tasks", "--isolation",
               isolation, "--max-tasks", str(count), "--wait-time", "1", "--sqs-timeout", "30", "--prefetch", "9"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(HERE), HERE])}
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return count


SUBMIT: dict[str, Callable[[str, int], int]] = {
    "raw boto3 send_message_batch, 1 thread": submit_raw,
    "raw boto3 send_message_batch, 4 threads": partial(submit_raw, threads=4),
    "raw boto3 send_message_batch, 16 threads": partial(submit_raw, threads=16),
    "sqsmaster submit_many": submit_sqsmaster,
    "task-queue insert, default 40 threads": submit_task_queue,
    "task-queue insert, 1 thread": partial(submit_task_queue, threads=1),
    "sqstaskmaster submit loop": submit_sqstaskmaster,
}
DRAIN: dict[str, Callable[[str, int], int]] = {
    "raw boto3 receive(10) + delete_message_batch": drain_raw,
    "sqsmaster task_generator(10) + MessageHandler": drain_sqsmaster,
    "sqsmaster Worker, signal isolation": partial(drain_worker, "signal"),
    "sqsmaster Worker, process isolation": partial(drain_worker, "process"),
    "sqstaskmaster task_generator + MessageHandler": drain_sqstaskmaster,
    "task-queue poll": drain_task_queue,
}
PREFILL: dict[str, Callable[[str, int], int]] = {
    "task-queue poll": partial(submit_task_queue, threads=1),  # its own body format
}


def cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def preload() -> None:
    """Import every library before the clock starts: a one-time import (task-queue pulls numpy) is not per message."""
    import importlib

    for module in ("boto3", "sqsmaster", "sqstaskmaster.task_manager", "taskqueue", "tq_tasks"):
        try:
            importlib.import_module(module)
        except ImportError:
            pass


def main() -> None:
    kind, name, url, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    table = {"submit": SUBMIT, "rss": SUBMIT, "drain": DRAIN, "prefill": PREFILL}[kind]
    threads = re.fullmatch(r"raw boto3 send_message_batch, (\d+) threads?", name)
    function = partial(submit_raw, threads=int(threads.group(1))) if threads and kind == "submit" else table[name]
    if kind != "rss":  # the memory runs measure the whole process
        preload()
    cpu_start, start = cpu(), time.perf_counter()
    done = function(url, count)
    elapsed, cpu_used = time.perf_counter() - start, cpu() - cpu_start
    maxrss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"count": done, "elapsed": elapsed, "cpu": cpu_used, "maxrss_kb": maxrss_kb}))


if __name__ == "__main__":
    main()
