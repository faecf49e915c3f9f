"""``--concurrency N``: a pool that supervises its children and never hides a failure."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from sqsmaster.worker.pool import describe_exit, restart_delay

from .conftest import queue_counts
from .workerkit import ends, records, starts, submit, wait_for, worker_factory

QUICK = ["--sqs-timeout", "2", "--alarm-timeout", "0.5", "--wait-time", "1"]


@pytest.fixture
def worker(tmp_path):
    yield from worker_factory(tmp_path, QUICK)


def test_restart_delay_grows_while_children_keep_dying_young():
    assert [restart_delay(n) for n in range(1, 9)] == [0, 1, 2, 4, 8, 16, 30, 30]


def test_describe_exit_names_the_cause():
    assert describe_exit(-11, -1) == "was killed by SIGSEGV (a crash in C code)"
    assert describe_exit(-9, -1).startswith("was killed by SIGKILL")
    assert "exited with code 0 without stopping cleanly" in describe_exit(0, -1)
    assert describe_exit(3, 3) == "exited with code 3"


def test_children_that_crash_are_replaced_nothing_is_left_and_the_exit_code_says_so(make_queue, sqs_client, worker):
    # Given tasks that, on their first delivery, call sys.exit(3), os._exit(0) and segfault in their worker's own
    # process (signal isolation), among quick tasks
    url = make_queue(visibility_timeout=30)
    for task in ("exit_once", "os_exit_once", "segfault_once"):
        submit(sqs_client, url, task, id=task)
    for index in range(6):
        submit(sqs_client, url, "note", id=f"n{index}")

    # When a pool of two drains the queue
    run = worker(url, "--concurrency", "2", "--until-empty")
    code = run.wait(timeout=90)
    log = run.stderr

    # Then every task ended (the crashed ones on their second delivery): nothing is left unprocessed
    assert sorted(set(ends(run.record_path))) == sorted(["exit_once", "os_exit_once", "segfault_once",
                                                          *(f"n{i}" for i in range(6))])
    assert queue_counts(sqs_client, url) == (0, 0, 0)
    # And sys.exit() was only its task's failure, while os._exit(0) and the segfault ended their worker
    # process, which the pool named and replaced
    assert "TaskExit: the task raised sys.exit(3)" in log
    assert "exited with code 0 without stopping cleanly" in log and "was killed by SIGSEGV" in log
    assert log.count("starting another") == 2, log
    # And the pool's exit code tells the truth: worker processes died
    assert code == 4, log


def test_a_task_calling_sys_exit_fails_and_its_worker_goes_on(make_queue, sqs_client, worker):
    url = make_queue()
    submit(sqs_client, url, "exit_once", id="e")
    submit(sqs_client, url, "note", id="after")

    run = worker(url, "--until-empty")

    assert run.wait(timeout=30) == 0, run.stderr
    assert sorted(starts(run.record_path)) == ["after", "e", "e"] and sorted(ends(run.record_path)) == ["after", "e"]
    assert "failed message" in run.stderr and "retry scheduled" in run.stderr


def test_two_sigterms_2_ms_apart_release_everything_within_seconds(make_queue, sqs_client, worker):
    # Given a pool of two, each running a 60 s task and holding a prefetched message, with a 60 s grace
    url = make_queue(visibility_timeout=60)
    for index in range(4):
        submit(sqs_client, url, "nap", id=f"long{index}", seconds=60)
    run = worker(url, "--concurrency", "2", "--prefetch", "1", "--grace", "60", "--sqs-timeout", "30")
    wait_for(lambda: len(starts(run.record_path)) == 2, timeout=20, message="both tasks to start")
    wait_for(lambda: queue_counts(sqs_client, url)[0] == 0, timeout=10, message="the prefetches")

    # When the pool gets SIGTERM twice, 2 ms apart (or as soon after as the kernel has delivered the first:
    # a signal sent while the same one is still pending is merged into it by the kernel, before any code of
    # ours runs, and a loaded machine can leave the pool unscheduled for more than 2 ms)
    stopped = time.monotonic()
    os.kill(run.process.pid, signal.SIGTERM)
    time.sleep(0.002)
    wait_for(lambda: not pending(run.process.pid, signal.SIGTERM), timeout=5, message="the first SIGTERM delivered")
    os.kill(run.process.pid, signal.SIGTERM)

    # Then both signals counted: the running tasks are stopped and every message is visible again within
    # seconds, not after the 60 s grace (10 s: process start-up and releases on a loaded 2-core machine)
    wait_for(lambda: queue_counts(sqs_client, url) == (4, 0, 0), timeout=10, message="every message released")
    assert run.wait(timeout=10) == 0, run.stderr
    assert time.monotonic() - stopped < 10
    assert ends(run.record_path) == []
    # And the children say what the operator did, not what the pool sent them
    assert "SIGTERM to the pool received: stopping" in run.stderr
    assert "SIGUSR1" not in run.stderr


def pending(pid: int, signum: int) -> bool:
    """True while ``signum`` is sent to ``pid`` but not yet delivered (its bit in /proc's SigPnd or ShdPnd)."""
    bit = 1 << (signum - 1)
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("SigPnd:", "ShdPnd:")) and int(line.split()[1], 16) & bit:
            return True
    return False


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (children, their task processes, ...), from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended; only its parent (now init) has not read its status yet


def test_kill_9_of_the_pool_leaves_no_process_of_that_worker_after_2_seconds(make_queue, sqs_client, worker):
    # Given a pool of two whose tasks run in task processes of their own (process isolation)
    url = make_queue()
    for index in range(2):
        submit(sqs_client, url, "nap", id=f"long{index}", seconds=60)
    run = worker(url, "--concurrency", "2", "--isolation", "process")
    wait_for(lambda: len(starts(run.record_path)) == 2, timeout=20, message="both tasks to start")
    tree = descendants(run.process.pid)
    assert len(tree) >= 4  # two worker processes, two task processes (and their watchdogs)
    assert {line["pid"] for line in records(run.record_path)} <= tree

    # When the pool's own process is killed with SIGKILL
    run.process.send_signal(signal.SIGKILL)

    # Then within 2 s no process of that worker is left running
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and any(alive(pid) for pid in tree):
        time.sleep(0.05)
    assert not [pid for pid in tree if alive(pid)]


def test_a_pool_on_a_missing_queue_exits_3(sqs_server, worker):
    run = worker(f"{sqs_server.endpoint}/123456789012/no-such-queue", "--concurrency", "2")
    assert run.wait(timeout=30) == 3, run.stderr
    assert "does not exist" in run.stderr


def test_a_worker_process_stuck_in_c_code_is_killed_grace_plus_the_pool_margin_after_sigterm(
        make_queue, sqs_client, worker):
    # Given a pool whose task sits in one C call holding the GIL (its worker process can run no Python)
    from sqsmaster.worker.shutdown import POOL_KILL_MARGIN

    url = make_queue(visibility_timeout=60)
    stuck = submit(sqs_client, url, "gil_sleep", id="c", seconds=120)
    run = worker(url, "--concurrency", "2", "--grace", "1", "--sqs-timeout", "30")
    wait_for(lambda: starts(run.record_path), timeout=20, message="the task to start")

    # When the pool gets SIGTERM
    stopped = time.monotonic()
    run.send_signal(signal.SIGTERM)
    code = run.wait(timeout=60)
    took = time.monotonic() - stopped

    # Then the pool killed that worker process at --grace + POOL_KILL_MARGIN (plus 4 s for a loaded machine),
    # said so, and exits 5: the message comes back after its visibility timeout
    assert 1 + POOL_KILL_MARGIN - 0.5 < took < 1 + POOL_KILL_MARGIN + 4, run.stderr
    assert "still running" in run.stderr and "killing it" in run.stderr
    assert code == 5, run.stderr
    assert ends(run.record_path) == [] and stuck
