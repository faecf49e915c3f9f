"""The heartbeat policy and the SIGALRM deadline, driven by a clock the test moves by hand: no sleeps.

The deadline tests deliver SIGALRM themselves (``signal.raise_signal``), which runs the
handler before the next line of the test: every tick lands exactly where the test says.
"""

from __future__ import annotations

import signal

import pytest

from sqsmaster import ConfigurationError, HardTimeoutExceeded, TaskAbandoned, TaskStuck
from sqsmaster.supervise import HeartbeatPolicy
from sqsmaster.supervise.deadline import Deadline
from sqsmaster.supervise.policy import HEARTBEAT_RETRY_DELAY, MIN_TICK, STICKY_PERIOD


class Clock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def policy(clock: Clock, sqs_timeout: float = 30, alarm_timeout: float = 10, hard_timeout: float = 25,
           on_lease_lost: str = "continue") -> HeartbeatPolicy:
    return HeartbeatPolicy(sqs_timeout, alarm_timeout, hard_timeout, clock=clock, on_lease_lost=on_lease_lost)


def test_heartbeats_come_every_alarm_timeout_and_a_failed_one_is_retried_a_second_later():
    clock = Clock()
    p = policy(clock)
    assert not p.beat_due() and p.time_to_beat() == 10
    clock.advance(10)
    assert p.beat_due()
    p.beat_done(ok=True)
    assert p.time_to_beat() == 10
    clock.advance(10)
    p.beat_done(ok=False)
    assert p.time_to_beat() == HEARTBEAT_RETRY_DELAY == 1.0


def test_the_next_tick_is_the_next_heartbeat_or_the_deadline_whichever_comes_first():
    clock = Clock()
    p = policy(clock, alarm_timeout=10, hard_timeout=25)
    assert p.next_tick() == 10
    clock.advance(10)
    p.beat_done(ok=True)
    clock.advance(10)
    p.beat_done(ok=True)
    assert p.next_tick() == 5  # at t=20: the deadline (t=25) comes before the next beat (t=30)


def test_a_heartbeat_thread_behind_schedule_does_not_make_the_deadline_tick_in_a_storm():
    clock = Clock()
    p = policy(clock, alarm_timeout=10, hard_timeout=100)
    clock.advance(12)  # the beat due at t=10 is still being made (a slow call)
    assert p.beat_due()
    assert p.next_tick() == HEARTBEAT_RETRY_DELAY  # not MIN_TICK, over and over


def test_at_the_deadline_the_hard_timeout_fires_and_is_raised_again_every_second():
    clock = Clock()
    p = policy(clock, hard_timeout=25)
    clock.advance(24.999)
    assert p.due_interrupt() is None
    assert p.next_tick() == pytest.approx(0.001)
    clock.advance(0.001)  # exactly the deadline
    first = p.due_interrupt()
    assert isinstance(first, HardTimeoutExceeded)
    assert first.elapsed == pytest.approx(25)
    assert p.next_tick() == STICKY_PERIOD
    # a second tick landing together with the first (the timer's and the heartbeat thread's) raises once
    clock.advance(0.001)
    assert p.due_interrupt() is None
    clock.advance(STICKY_PERIOD - 0.001)
    second = p.due_interrupt()
    assert isinstance(second, HardTimeoutExceeded) and second is not first
    assert second.elapsed == pytest.approx(26)


def test_the_first_interrupt_fired_wins():
    clock = Clock()
    p = policy(clock, hard_timeout=25)
    clock.advance(3)
    p.fire(lambda elapsed: TaskStuck(elapsed))
    clock.advance(30)  # past the deadline too
    interrupt = p.due_interrupt()
    assert isinstance(interrupt, TaskStuck)
    assert interrupt.elapsed == pytest.approx(33)


def test_interrupts_fired_after_run_returned_do_not_count():
    clock = Clock()
    p = policy(clock)
    p.open()
    p.close()
    p.fire(lambda elapsed: TaskStuck(elapsed))
    assert not p.fired and p.interrupt() is None
    p.open()  # run() called again
    p.fire(lambda elapsed: TaskStuck(elapsed))
    assert isinstance(p.interrupt(), TaskStuck)


def test_an_interrupt_fired_as_the_task_ended_on_its_own_is_dropped_the_first_to_happen_wins():
    # Given an interrupt fired while run() was still open, but never raised into the task (it returned first)
    clock = Clock()
    p = policy(clock)
    p.open()
    p.fire(lambda elapsed: TaskStuck(elapsed))
    # When run() closes: it is dropped, so the task keeps its own outcome
    p.close()
    assert p.interrupt() is None
    # And one that was raised into the task (which swallowed it and returned) stays its outcome
    p.open()
    p.fire(lambda elapsed: TaskStuck(elapsed))
    assert isinstance(p.due_interrupt(), TaskStuck)
    p.close()
    assert isinstance(p.interrupt(), TaskStuck)
    # But not when it reached a task that had already ended (a task process whose result was back)
    p.open()
    p.close(ended_first=True)
    assert p.interrupt() is None


def test_a_lost_lease_stops_the_task_only_with_on_lease_lost_stop():
    clock = Clock()
    assert policy(clock).lease_lost_interrupt("m-1") is None
    make = policy(clock, on_lease_lost="stop").lease_lost_interrupt("m-1")
    assert make is not None
    interrupt = make(2.0)
    assert isinstance(interrupt, TaskAbandoned) and interrupt.message_id == "m-1"
    with pytest.raises(ConfigurationError, match="on_lease_lost"):
        policy(clock, on_lease_lost="ignore")


@pytest.mark.parametrize("received, remaining, needed", [
    (None, None, True),      # a boto3 message: the receive's visibility is unknown
    (20, 19, True),          # the receive hid it for less than sqs_timeout
    (30, 29.5, False),       # the receive hid it for sqs_timeout: no call
    (30, 10.5, True),        # ... but too long ago: less than a heartbeat period and a second left
])
def test_the_initial_extension_is_skipped_only_when_the_receive_already_hid_the_message(received, remaining,
                                                                                         needed):
    assert policy(Clock()).needs_initial_extension(received, remaining) is needed


@pytest.mark.parametrize("sqs_timeout, alarm_timeout, bound", [(30, 10, 10.0), (12, 6, 6.0), (3, 1.5, 1.5),
                                                              (2, 0.9, 1.1), (1.5, 0.2, 1.3)])
def test_a_heartbeat_call_is_bounded_by_the_lease_margin(sqs_timeout, alarm_timeout, bound):
    assert policy(Clock(), sqs_timeout, alarm_timeout).call_timeout == bound


# -- the SIGALRM deadline, ticks delivered by hand ------------------------------------------------

def tick() -> None:
    signal.raise_signal(signal.SIGALRM)


@pytest.fixture
def sentinel_handler():
    """A SIGALRM handler of the test's own, installed around each test; records stray ticks."""
    calls: list[int] = []
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: calls.append(signum))
    yield calls
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


def test_a_tick_before_the_deadline_wakes_the_heartbeat_and_one_at_the_deadline_raises(sentinel_handler):
    clock = Clock()
    p = policy(clock, alarm_timeout=100, hard_timeout=500)  # real timers armed far beyond the test
    wakes: list[int] = []
    with Deadline(p, lambda: wakes.append(1)) as deadline:
        deadline.arm()
        tick()
        assert wakes == [1]
        clock.advance(500)
        with pytest.raises(HardTimeoutExceeded):
            tick()
        tick()  # landing right after the first raise: no second raise
        clock.advance(STICKY_PERIOD)
        with pytest.raises(HardTimeoutExceeded):
            tick()
        deadline.closing = True  # what run()'s finally sets first
        woken = len(wakes)
        clock.advance(STICKY_PERIOD)
        tick()  # a tick in that finally does nothing at all
        assert len(wakes) == woken
    tick()  # after the with: the previous handler's, not ours
    assert sentinel_handler == [signal.SIGALRM]
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_a_tick_before_arm_or_after_exit_does_nothing(sentinel_handler):
    clock = Clock()
    p = policy(clock, hard_timeout=1)
    clock.advance(2)  # already past the deadline
    with Deadline(p, lambda: None):
        tick()  # installed, not armed
    tick()
    assert sentinel_handler == [signal.SIGALRM]


def test_an_outer_timer_is_suspended_and_resumed_with_what_it_had_left(sentinel_handler):
    signal.setitimer(signal.ITIMER_REAL, 300, 60)
    with Deadline(policy(Clock(), alarm_timeout=100, hard_timeout=500), lambda: None) as deadline:
        deadline.arm()
    left, interval = signal.getitimer(signal.ITIMER_REAL)
    assert 299 < left <= 300 and interval == 60


def test_the_deadline_refuses_a_thread_other_than_main():
    import threading

    errors: list[BaseException] = []

    def enter() -> None:
        try:
            Deadline(policy(Clock()), lambda: None).__enter__()
        except ConfigurationError as exc:
            errors.append(exc)

    thread = threading.Thread(target=enter)
    thread.start()
    thread.join()
    assert len(errors) == 1 and "main thread" in str(errors[0])


def test_min_tick_is_never_zero():
    clock = Clock()
    p = policy(clock, hard_timeout=1)
    clock.advance(5)
    assert p.next_tick() >= MIN_TICK > 0
