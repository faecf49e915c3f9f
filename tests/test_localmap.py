"""sqsmaster.map and LocalPool: a local parallel map, each call in a supervised process of its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import sqsmaster
from sqsmaster import ConfigurationError, HardTimeoutExceeded, LocalPool, MemoryCapExceeded, Outcome
from sqsmaster.ops.report import draw_timeline, format_summary

#: Wall-clock margins: these tests fork real processes on a shared 2-core machine, so a step that takes
#: milliseconds alone is given seconds (a loaded machine stretches a fork tenfold); none guards a promise's bound
#: by its tightness, only that the bound holds at all.
SLACK = 10.0


def square_or_fail(x: int) -> int:
    if x == 3:
        raise ValueError("three is not welcome")
    return x * x


def test_results_come_in_input_order_and_one_failure_does_not_stop_the_others():
    # When 8 items are mapped in 3 processes and item 3 raises
    results = sqsmaster.map(square_or_fail, range(8), processes=3)
    # Then every item has its result, in input order
    assert [r.index for r in results] == list(range(8))
    assert [r.value for r in results if r.ok] == [0, 1, 4, 16, 25, 36, 49]
    failed = results[3]
    assert failed.outcome == Outcome.FAILED and failed.exception == "ValueError: three is not welcome"
    assert "square_or_fail" in failed.traceback and "raise ValueError" in failed.traceback
    # And result() raises the original exception, as a Future does
    with pytest.raises(ValueError, match="three is not welcome"):
        failed.result()
    assert results[4].result() == 16


def test_a_call_past_its_hard_timeout_is_killed_even_inside_c_code_and_reported_for_its_item():
    # Given calls that hold the GIL in one C call far longer than the 1 s hard timeout
    started = time.monotonic()
    results = sqsmaster.map(lambda n: sum(range(n)), [10, 10**12, 20], processes=2, hard_timeout=1, kill_grace=1)
    # Then only that item timed out, within its deadline plus the kill grace (plus slack for a loaded machine)
    assert [r.outcome for r in results] == [Outcome.SUCCEEDED, Outcome.TIMED_OUT, Outcome.SUCCEEDED]
    assert isinstance(results[1].error, HardTimeoutExceeded) and "hard timeout of 1" in results[1].exception
    assert 1.0 <= results[1].runtime < 2.0 + SLACK
    assert time.monotonic() - started < 2.0 + SLACK
    assert results[2].value == 190


def test_a_call_over_its_memory_cap_is_reported_for_its_item():
    results = sqsmaster.map(lambda mb: len(bytearray(mb * 2**20)), [1, 800], processes=2, max_memory_mb=200)
    assert results[0].value == 2**20
    assert results[1].outcome == Outcome.FAILED and isinstance(results[1].error, MemoryCapExceeded)
    assert "memory cap of 200 MiB" in results[1].exception


def test_a_big_result_comes_back_and_a_crash_or_a_kill_is_reported_for_its_item():
    def work(case: str) -> object:
        if case == "exit":
            os._exit(3)
        if case == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        return "x" * (8 * 2**20)  # far over a pipe's buffer: read while the child writes

    results = sqsmaster.map(work, ["big", "exit", "kill"], processes=3)
    assert results[0].value == "x" * (8 * 2**20)
    assert results[1].outcome == Outcome.FAILED and "exited with code 3" in results[1].exception
    assert results[2].outcome == Outcome.KILLED and "SIGKILL" in results[2].exception


def test_progress_shows_every_call_ended(capsys):
    sqsmaster.map(abs, range(5), processes=2, progress=True)
    assert "5/5" in capsys.readouterr().err  # tqdm's bar, or the plain line without tqdm


def test_lower_priority_numbers_start_first_and_ties_keep_put_order():
    with LocalPool(1) as pool:
        for priority in (5, 1, 3, 0, 1):
            pool.put(time.time, priority=priority)
        results = pool.results()
    assert [r.index for r in sorted(results, key=lambda r: r.started)] == [3, 1, 4, 2, 0]


def test_the_calls_of_one_lane_run_one_at_a_time_in_put_order(tmp_path):
    def stamp(name: str) -> None:
        (tmp_path / f"{name}.start").write_text(str(time.time()))
        time.sleep(0.2)
        (tmp_path / f"{name}.end").write_text(str(time.time()))

    with LocalPool(4) as pool:
        for n in range(3):
            pool.put(stamp, (f"a{n}",), lane="a")
        pool.put(stamp, ("free",))
        assert all(r.ok for r in pool.results())
    times = {p.name: float(p.read_text()) for p in tmp_path.iterdir()}
    assert times["a0.end"] <= times["a1.start"] and times["a1.end"] <= times["a2.start"]
    # the call without a lane did not wait for the lane
    assert times["free.start"] < times["a0.end"]


def test_as_completed_yields_results_as_calls_end_and_breaking_out_kills_the_rest(tmp_path):
    # Given a fast call and slow ones that record their pid
    def work(seconds: float) -> int:
        (tmp_path / str(os.getpid())).touch()
        time.sleep(seconds)
        return os.getpid()

    # When the loop takes the first result and stops
    iterator = sqsmaster.imap_unordered(work, [60, 0, 60], processes=3)
    first = next(iterator)
    iterator.close()
    # Then the first result was the fast call, and no slow call is left running
    assert first.index == 1 and first.ok
    assert not [pid for pid in map(int, os.listdir(tmp_path)) if alive(pid)]


def test_job_records_feed_the_report_and_the_timeline(tmp_path):
    with LocalPool(2) as pool:
        pool.map(square_or_fail, range(5))
        pool.results()
        records = pool.records()
        pool.timeline(tmp_path / "map.png")
    assert [r.outcome for r in records].count(Outcome.FAILED) == 1
    assert "square_or_fail" in format_summary(records)
    assert (tmp_path / "map.png").stat().st_size > 1000
    draw_timeline(records, tmp_path / "again.svg")


@pytest.mark.parametrize("bad", [{"processes": 0}, {"processes": "2"}, {"hard_timeout": -1}, {"max_memory_mb": 0}])
def test_bad_settings_are_refused_with_a_clear_error(bad):
    with pytest.raises(ConfigurationError, match=next(iter(bad))):
        LocalPool(**{"processes": 1, **bad})


PARENT = textwrap.dedent("""
    import os, subprocess, sys, time
    import sqsmaster

    def work(n):
        grandchild = subprocess.Popen(["sleep", "300"])
        with open(os.path.join(sys.argv[1], f"{os.getpid()}-{grandchild.pid}"), "w"):
            pass
        time.sleep(300)

    results = sqsmaster.map(work, range(4), processes=2)
    print("finished", [r.outcome for r in results], flush=True)
""")


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for a reaper counts as gone: it runs no code)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_a_parent_stopped_by_a_signal_leaves_no_call_or_grandchild_behind(tmp_path, signum):
    # Given a map whose calls each started a grandchild, running in a process of its own
    # (SIGINT at its default, as a terminal's foreground job has it: a suite started in the background, `cmd &`,
    # passes SIGINT ignored to its children, and Python then leaves it ignored, as it should)
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path)], stderr=subprocess.PIPE, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 30
        while len(os.listdir(tmp_path)) < 2:
            assert time.monotonic() < deadline and parent.poll() is None, parent.stderr.read() if parent.stderr else ""
            time.sleep(0.05)
        pids = [int(pid) for name in os.listdir(tmp_path) for pid in name.split("-")]
        # When the parent gets the signal
        parent.send_signal(signum)
        code = parent.wait(timeout=SLACK)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    # Then it stopped without finishing the map; after Ctrl-C or SIGTERM it killed and reaped every call's
    # process group before exiting (SIGTERM exits 143, as a shell reports it)
    assert code == {signal.SIGINT: -signal.SIGINT, signal.SIGTERM: 143, signal.SIGKILL: -signal.SIGKILL}[signum]
    if signum != signal.SIGKILL:
        assert [pid for pid in pids if alive(pid)] == []
    # and after SIGKILL, which it cannot catch, the calls die with it (PR_SET_PDEATHSIG and their watchdogs)
    deadline = time.monotonic() + SLACK
    while [pid for pid in pids if alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [pid for pid in pids if alive(pid)] == []


class Unloadable(Exception):
    """An exception that pickles, but whose unpickling fails: pickle calls ``Unloadable(*args)`` with one arg."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(code)
        self.detail = detail


def returns_unloadable(x: int) -> object:
    return Unloadable("E42", "returned, not raised") if x == 1 else x


def test_a_return_value_that_cannot_be_unpickled_does_not_stop_the_map():
    # Given a call whose value pickles in the child but cannot be unpickled in the parent
    results = sqsmaster.map(returns_unloadable, range(4), processes=2)
    # Then every other item still has its value; that item succeeded, its value lost as an unpicklable one is
    assert [r.value for r in results] == [0, None, 2, 3]
    assert [r.outcome for r in results] == [Outcome.SUCCEEDED] * 4


def forks_and_returns(x: int) -> tuple:
    """A call that forks and whose forked copy returns too (it never calls os._exit): only the call's
    own value is its result."""
    pid = os.fork()
    if pid:
        time.sleep(0.2)  # the copy ends first: what it does must not be taken for the call's result
        os.waitpid(pid, 0)
        return ("call", x)
    if x == 1:
        sys.exit(0)  # the usual end of a forked worker process
    if x == 2:
        raise ValueError("the forked copy failed")
    return ("forked copy", x)


def test_a_call_that_forks_gets_its_own_result_whatever_its_forked_copy_does():
    results = sqsmaster.map(forks_and_returns, range(3), processes=3)
    assert [(r.outcome, r.value) for r in results] == [(Outcome.SUCCEEDED, ("call", x)) for x in range(3)]
