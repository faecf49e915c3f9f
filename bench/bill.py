"""The request bill: SQS requests per task and per idle minute, counted at the server, and what they cost.

    python bench/bill.py [--quick] [--scale 30] [--tasks 100] [--idle 60]

Every client talks to one moto server process through bench/proxy.py, which counts
each request under its queue and action, so sqsmaster, sqstaskmaster and
python-task-queue are counted the same way. Each contender has queues of its own
and runs what its users run: submit the tasks, then one worker process works them.

* quick task: ``--tasks`` no-op tasks, submitted then worked.
* 10-minute task with a 30 s heartbeat: 3 such tasks queued, then worked, at
  1/``--scale`` of the time (scale 30: 20 s tasks, a heartbeat a second, a 3 s
  visibility): the same number of heartbeats as the real thing, in less time.
  Nothing else in a worker depends on the clock while a task runs (sqsmaster and
  sqstaskmaster do not receive during a task), so the counts are those of real time.
* idle: worker processes on empty queues for ``--idle`` seconds: ReceiveMessage calls
  a minute, and what a month of one idle worker process costs.

Dollars: each request (each started 64 KiB of its payload) at :data:`PRICE_PER_MILLION`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

#: USD per million requests: SQS standard queues after the free tier (AWS list price, us-east-1, 2025-2026).
PRICE_PER_MILLION = 0.40
#: Minutes in a 30-day month, for the idle cost.
MONTH_MINUTES = 30 * 24 * 60
SEND, RECEIVE, VISIBILITY, DELETE = "send", "receive", "visibility", "delete"
KINDS = {"SendMessage": SEND, "SendMessageBatch": SEND, "ReceiveMessage": RECEIVE,
         "ChangeMessageVisibility": VISIBILITY, "ChangeMessageVisibilityBatch": VISIBILITY,
         "DeleteMessage": DELETE, "DeleteMessageBatch": DELETE}
SQSMASTER, SQSMASTER_PREFETCH = "sqsmaster worker", "sqsmaster worker --prefetch 9"
SQSMASTER_3 = "sqsmaster worker, 3 priority queues"
STM, TQ = "sqstaskmaster task_generator + MessageHandler", "task-queue poll"


# -- the contenders' processes -------------------------------------------------------------------------

def submit(library: str, url: str, count: int, seconds: float) -> None:
    """Queue ``count`` tasks that sleep ``seconds``, the way each library's users do."""
    if library == "sqsmaster":
        from sqsmaster import TaskManager

        TaskManager(url, sender_name="bench").submit_many(("sleepy", {"seconds": seconds, "i": i})
                                                          for i in range(count))
    elif library == "sqstaskmaster":
        from sqstaskmaster.task_manager import TaskManager as OldManager

        manager = OldManager(url, sender_name="bench")
        for i in range(count):
            manager.submit("sleepy", seconds=seconds, i=i)
    else:
        from functools import partial

        from contenders import task_queue
        from tq_tasks import sleepy

        task_queue(url).insert([partial(sleepy, i, seconds) for i in range(count)], total=count)


def work_sqstaskmaster(url: str, count: int, visibility: int, heartbeat: int) -> None:
    """sqstaskmaster's consumer loop, as its README shows it: ``count`` tasks, then return (forever if 0)."""
    from sqstaskmaster.message_handler import MessageHandler as OldHandler
    from sqstaskmaster.task_manager import TaskManager as OldManager

    class Sleepy(OldHandler):
        def run(self) -> None:
            time.sleep(self.seconds)

        def running(self) -> bool:
            return True

        def notify(self, exception: BaseException, context: Any = None) -> None:
            pass

    done = 0
    for _task, kwargs, message in OldManager(url).task_generator(wait_time=20, sqs_timeout=visibility):
        with Sleepy(message, sqs_timeout=visibility, alarm_timeout=heartbeat, hard_timeout=10**6) as handler:
            handler.seconds = kwargs.get("seconds", 0)
            handler.run()
        done += 1
        if done == count:
            return


def work_task_queue(url: str, count: int, lease: int) -> None:
    """task-queue's ``poll``: it has no heartbeat, so the lease must cover the longest task."""
    import tq_tasks  # noqa: F401  (registers the tasks poll runs)
    from contenders import task_queue

    task_queue(url).poll(lease_seconds=lease, stop_fn=lambda executed: count and executed >= count)


def sqsmaster_worker(urls: list[str], count: int, visibility: int, heartbeat: float, prefetch: int) -> list[str]:
    command = [sys.executable, "-m", "sqsmaster", "worker", urls[0], "--tasks", "worker_tasks",
               "--sqs-timeout", str(visibility), "--alarm-timeout", str(heartbeat), "--prefetch", str(prefetch)]
    for url in urls[1:]:
        command += ["--queue", url]
    return command + (["--max-tasks", str(count)] if count else [])


# -- the scenarios -------------------------------------------------------------------------------------

def contender_env(endpoint: str) -> dict[str, str]:
    return {**os.environ, "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
            "PYTHONPATH": os.pathsep.join([ROOT, HERE])}


def start(step: dict[str, Any], endpoint: str) -> subprocess.Popen:
    """One step of a contender (``{"do": "submit" | "work", ...}``) in a process of its own."""
    if step.get("library") == "sqsmaster" and step["do"] == "work":
        command = sqsmaster_worker(step["urls"], step["count"], step["visibility"], step["heartbeat"],
                                   step.get("prefetch", 0))
    else:
        command = [sys.executable, os.path.abspath(__file__), "step", json.dumps(step)]
    return subprocess.Popen(command, env=contender_env(endpoint), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def run_step(step: dict[str, Any]) -> None:
    if step["do"] == "submit":
        submit(step["library"], step["urls"][0], step["count"], step["seconds"])
    elif step["library"] == "sqstaskmaster":
        work_sqstaskmaster(step["urls"][0], step["count"], step["visibility"], int(step["heartbeat"]))
    else:
        work_task_queue(step["urls"][0], step["count"], step["lease"])


def finish(process: subprocess.Popen, name: str, timeout: float) -> None:
    try:
        _, errors = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise RuntimeError(f"{name} did not finish in {timeout:.0f} s") from None
    if process.returncode != 0:
        raise RuntimeError(f"{name} failed ({process.returncode}): {errors.strip()[-800:]}")


def contenders(count: int, seconds: float, visibility: int, heartbeat: float, lease: int) -> dict[str, dict]:
    """Each contender's settings for one scenario (its queue names are its keys' positions)."""
    common = {"count": count, "seconds": seconds, "visibility": visibility, "heartbeat": heartbeat, "lease": lease}
    return {SQSMASTER: {"library": "sqsmaster", **common},
            SQSMASTER_PREFETCH: {"library": "sqsmaster", "prefetch": 9, **common},
            STM: {"library": "sqstaskmaster", **common},
            TQ: {"library": "task-queue", **common}}


def per_task(proxy: Any, queues: dict[str, list[str]], tasks: int) -> dict[str, Any]:
    """Requests per task by kind, for each contender's queues, and the dollars per million tasks."""
    counts, billed = proxy.counts(), proxy.billed()
    rows = {}
    for name, names in queues.items():
        kinds: Counter[str] = Counter()
        for (queue, action), n in counts.items():
            if queue in names:
                kinds[KINDS.get(action, "other")] += n
        bill = sum(n for (queue, _), n in billed.items() if queue in names)
        rows[name] = {"per_task": {kind: n / tasks for kind, n in kinds.items()},
                      "total": sum(kinds.values()) / tasks,
                      "usd_per_million_tasks": bill / tasks * PRICE_PER_MILLION}
    return rows


def bench_tasks(moto: str, sqs: Any, label: str, settings: dict[str, dict], timeout: float) -> dict[str, Any]:
    """Submit then work each contender's tasks (the contenders side by side), counting at the proxy."""
    from proxy import CountingProxy

    with CountingProxy(int(moto.rsplit(":", 1)[1])) as proxy:
        queues, running = {}, []
        for index, (name, step) in enumerate(settings.items()):
            queue = f"bill-{label}-{index}"
            url = sqs.create_queue(QueueName=queue)["QueueUrl"].replace(moto, proxy.endpoint)
            queues[name] = [queue]
            running.append((name, {**step, "urls": [url]}))
        for name, step in running:
            finish(start({**step, "do": "submit"}, proxy.endpoint), f"{name} submit", timeout)
        workers = [(name, start({**step, "do": "work"}, proxy.endpoint)) for name, step in running]
        for name, process in workers:
            finish(process, f"{name} work", timeout)
        return per_task(proxy, queues, next(iter(settings.values()))["count"])


def bench_idle(moto: str, sqs: Any, seconds: float) -> dict[str, Any]:
    """ReceiveMessage calls a minute of worker processes on empty queues, side by side."""
    from proxy import CountingProxy

    settings = {SQSMASTER: ("sqsmaster", 1), SQSMASTER_3: ("sqsmaster", 3), STM: ("sqstaskmaster", 1),
                TQ: ("task-queue", 1)}
    with CountingProxy(int(moto.rsplit(":", 1)[1])) as proxy:
        queues, processes = {}, []
        for index, (name, (library, count)) in enumerate(settings.items()):
            names = [f"idle-{index}-{n}" for n in range(count)]
            urls = [sqs.create_queue(QueueName=queue)["QueueUrl"].replace(moto, proxy.endpoint) for queue in names]
            queues[name] = names
            step = {"do": "work", "library": library, "urls": urls, "count": 0, "visibility": 30,
                    "heartbeat": 10, "lease": 30}
            processes.append(start(step, proxy.endpoint))
        time.sleep(5)  # the workers start (imports, clients, redrive policies): not idle time
        before = proxy.counts()
        time.sleep(seconds)
        after = proxy.counts()
        for process in processes:
            os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    results = {}
    for name, names in queues.items():
        receives = sum(n - before.get(key, 0) for key, n in after.items()
                       if key[0] in names and key[1] == "ReceiveMessage")
        per_minute = receives / seconds * 60
        results[name] = {"receives_per_minute": per_minute,
                         "usd_per_month": per_minute * MONTH_MINUTES / 1e6 * PRICE_PER_MILLION}
    return results


def run(scale: float, tasks: int, long_tasks: int, idle: float) -> dict[str, Any]:
    """All three scenarios on one moto server process; the figures :func:`report.bill_tables` renders."""
    from run import client, log, moto_server

    results: dict[str, Any] = {"price_per_million": PRICE_PER_MILLION, "scale": scale, "tasks": tasks,
                               "long_tasks": long_tasks, "idle_seconds": idle}
    with moto_server() as moto:
        sqs = client(moto)
        quick_settings = contenders(tasks, 0, 30, 10, 30)
        log(f"bill: {tasks} quick tasks per contender")
        results["quick"] = bench_tasks(moto, sqs, "quick", quick_settings, timeout=600)
        visibility, heartbeat = max(3, round(90 / scale)), 30 / scale
        long_settings = contenders(long_tasks, 600 / scale, visibility, heartbeat, lease=round(660 / scale))
        log(f"bill: {long_tasks} 10-minute tasks per contender at 1/{scale:g} of the time")
        results["long"] = bench_tasks(moto, sqs, "long", long_settings, timeout=long_tasks * 600 / scale + 120)
        log(f"bill: idle workers for {idle:g} s")
        results["idle"] = bench_idle(moto, sqs, idle)
    return results


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "step":
        run_step(json.loads(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 quick tasks, 2 long ones, 20 s idle")
    parser.add_argument("--scale", type=float, default=30,
                        help="time scale of the 10-minute task (default 30; at most 30: sqstaskmaster's "
                             "heartbeat is whole seconds)")
    parser.add_argument("--tasks", type=int, default=100, help="quick tasks per contender (default 100)")
    parser.add_argument("--long-tasks", type=int, default=3, help="10-minute tasks per contender (default 3)")
    parser.add_argument("--idle", type=float, default=60, help="seconds of idle workers (default 60)")
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.long_tasks, args.idle = 20, 2, 20
    from report import bill_tables

    print(bill_tables(run(args.scale, args.tasks, args.long_tasks, args.idle)))


if __name__ == "__main__":
    main()
