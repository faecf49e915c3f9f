"""Periodic tasks without a single scheduler: every worker's scheduler claims each due slot in the job store,
the winner sends it, so a slot fires once across any number of schedulers and survives one of them dying.

A simulated clock drives the schedulers (no sleeps); the slots go to a moto SQS queue over HTTP and the test
counts the messages there, by their ``schedule_slot`` attribute.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from typing import Any

import pytest

from sqsmaster import Registry, every
from sqsmaster.store import open_store
from sqsmaster.worker.scheduler import CLAIM_TTL, QueueSender, Scheduler, slot_key

#: The job stores every test runs on: a claim is a conditional write in each (INSERT OR IGNORE; attribute_not_exists).
STORES = ["sqlite", "dynamodb"]
T0 = 1_800_000_000.0  # on the 10-minute grid (a multiple of 600)
PERIOD = 600


class Clock:
    """A simulated wall clock, shared by every scheduler of a test."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Crash(BaseException):
    """A scheduler process dying where the test says (not an error the scheduler could catch)."""


def report() -> None:
    """The periodic task (never run here: the test only counts its messages)."""


def make_registry(**schedule: Any) -> Registry:
    registry = Registry()
    registry.register(report, schedule=every(minutes=10, **schedule))
    return registry


@pytest.fixture(params=STORES)
def store_url(request, make_store_url):
    """Each test on a sqlite:// job store and on a DynamoDB table (moto's server, over HTTP)."""
    return make_store_url(request.param)


def scheduler(registry: Registry, store_url: str, queue_url: str, clock: Clock, owner: str, send: Any = None,
              **options: Any) -> Scheduler:
    # Each scheduler has its own store connection, as each worker process does.
    return Scheduler([registry.get(name) for name in registry.names()], open_store(store_url),
                     send or QueueSender(queue_url), owner, clock=clock, **options)


def sent_slots(client: Any, url: str) -> Counter:
    """How many messages the queue holds for each slot, counting each once: they are received and stay hidden
    for an hour (a delete per message would double the calls to the test server)."""
    found: Counter = Counter()
    while True:
        batch = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                       VisibilityTimeout=3600, MessageAttributeNames=["All"]).get("Messages", [])
        if not batch:
            return found
        for message in batch:
            found[message["MessageAttributes"]["schedule_slot"]["StringValue"]] += 1


def grid(first: int, count: int) -> Counter:
    return Counter({slot_key("report", T0 + PERIOD * k): 1 for k in range(first, first + count)})


def passes_at_once(schedulers: list[Scheduler]) -> None:
    """One pass of every scheduler, each on its own thread, started together (they race for the claims)."""
    start = threading.Barrier(len(schedulers))
    errors: list[BaseException] = []

    def run(one: Scheduler) -> None:
        start.wait()
        try:
            one.run_pass()
        except BaseException as exc:  # a Crash: that scheduler is dead
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(one,)) for one in schedulers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def test_three_schedulers_over_100_slots_send_each_slot_exactly_once(store_url, make_queue, sqs_client):
    # Given three schedulers on one store and one queue, a 10-minute schedule and a clock at its first slot
    url, clock = make_queue(), Clock(T0 + 0.5)
    registry = make_registry()
    schedulers = [scheduler(registry, store_url, url, clock, f"worker-{i}") for i in range(3)]
    # When the clock walks across 100 slots, each scheduler passing twice per slot, all at once
    for step in range(100 * 2):
        clock.now = T0 + 0.5 + step * PERIOD / 2
        passes_at_once(schedulers)
    # Then every slot of the grid was sent exactly once, and nothing else
    assert sent_slots(sqs_client, url) == grid(0, 100)


def test_a_winner_dying_between_its_claim_and_its_send_still_fires_the_slot_once(store_url, make_queue, sqs_client):
    # Given three schedulers; the first wins the slot's claim and dies before it sends
    url, clock = make_queue(), Clock(T0 + 0.5)
    registry = make_registry()

    def die(spec: Any, slot: float) -> str:
        raise Crash()

    dying = scheduler(registry, store_url, url, clock, "dying", send=die)
    others = [scheduler(registry, store_url, url, clock, f"worker-{i}") for i in range(2)]
    with pytest.raises(Crash):
        dying.run_pass()
    # When the others pass while its claim lasts
    for offset in (1, 10, CLAIM_TTL - 1):
        clock.now = T0 + offset
        passes_at_once(others)
    # Then nothing was sent yet: the claim is the dead winner's
    assert sent_slots(sqs_client, url) == Counter()
    # And once the claim expired, one of the others sends the slot, once
    for offset in (CLAIM_TTL + 1, CLAIM_TTL + 2, 300):
        clock.now = T0 + offset
        passes_at_once(others)
    assert sent_slots(sqs_client, url) == grid(0, 1)


def test_across_100_slots_with_winners_dying_every_slot_still_fires_exactly_once(store_url, make_queue,
                                                                                sqs_client):
    # Given three schedulers, one of which dies between claim and send now and then (and is replaced,
    # as a pool replaces a dead worker process)
    url, clock = make_queue(), Clock(T0 + 0.5)
    registry = make_registry()
    rng = random.Random(16)

    def flaky(sender: QueueSender) -> Any:
        def send(spec: Any, slot: float) -> str:
            if rng.random() < 0.2:
                raise Crash()
            return sender(spec, slot)
        return send

    sender = QueueSender(url)  # one client for all: making a boto3 client costs more than this test's sends
    schedulers = [scheduler(registry, store_url, url, clock, f"worker-{i}", send=flaky(sender)) for i in range(3)]
    replaced = 0
    # When the clock walks across 100 slots, two minutes a step (a dead winner's claim lasts CLAIM_TTL)
    for step in range(100 * PERIOD // 120):
        clock.now = T0 + 0.5 + step * 120
        for index, one in enumerate(schedulers):
            try:
                one.run_pass()
            except Crash:
                replaced += 1
                schedulers[index] = scheduler(registry, store_url, url, clock, f"worker-{index}-{replaced}",
                                              send=flaky(sender))
    # Then schedulers did die mid-slot, and still every slot was sent exactly once
    assert replaced >= 5
    assert sent_slots(sqs_client, url) == grid(0, 100)


def test_a_restart_at_any_moment_does_not_shift_the_grid(store_url, make_queue, sqs_client):
    # Given a scheduler that sent the first three slots
    url, clock = make_queue(), Clock(T0 + 0.5)
    registry = make_registry()
    first = scheduler(registry, store_url, url, clock, "before")
    for step in range(3 * 4):
        clock.now = T0 + 0.5 + step * PERIOD / 4
        first.run_pass()
    # When the worker restarts 7 min 13.3 s into the third slot, and runs on
    restarted = scheduler(registry, store_url, url, clock, "after")
    for seconds in range(int(2 * PERIOD + 433.3), int(6 * PERIOD), 7):
        clock.now = T0 + seconds + 0.3
        restarted.run_pass()
    # Then the slots stay on the 10-minute grid: the restart neither sends the third slot again nor sends
    # one at its own start time
    assert sent_slots(sqs_client, url) == grid(0, 6)


@pytest.mark.parametrize("catch_up, max_lateness, expected", [
    ("latest", None, [15]),
    ("all", None, [11, 12, 13, 14, 15]),
    ("all", 2.5 * PERIOD, [13, 14, 15]),
    ("latest", 0.25 * PERIOD, []),
])
def test_after_a_pause_missed_slots_collapse_or_are_all_sent(store_url, make_queue, sqs_client, catch_up,
                                                             max_lateness, expected):
    # Given slots up to the 10th sent, then every worker down
    url, clock = make_queue(), Clock(T0 + 10 * PERIOD + 1)
    registry = make_registry(catch_up=catch_up, max_lateness=max_lateness)
    scheduler(registry, store_url, url, clock, "before").run_pass()
    assert sent_slots(sqs_client, url) == grid(10, 1)
    # When a worker starts again halfway through the 15th slot
    clock.now = T0 + 15.5 * PERIOD
    scheduler(registry, store_url, url, clock, "after").run_pass()
    # Then latest sends the newest missed slot only, all sends every one (within max_lateness)
    assert sent_slots(sqs_client, url) == Counter({slot_key("report", T0 + PERIOD * k): 1 for k in expected})


def test_a_schedule_that_never_fired_waits_for_its_next_slot_rather_than_firing_late(store_url, make_queue,
                                                                                     sqs_client):
    # Given a daily task deployed long after today's slot
    url, clock = make_queue(), Clock(T0 + 5 * 3600)
    registry = Registry()
    registry.register(report, schedule=every(days=1))
    one = scheduler(registry, store_url, url, clock, "new")
    # When its scheduler passes now, and again at the next slot
    one.run_pass()
    assert sent_slots(sqs_client, url) == Counter()
    next_day = one.specs[0].schedule.following(clock.now)
    clock.now = next_day + 0.5
    one.run_pass()
    # Then it fired at the next slot only
    assert sent_slots(sqs_client, url) == Counter({slot_key("report", next_day): 1})


def test_a_winner_dying_after_its_send_is_sent_once_on_a_fifo_queue(store_url, make_queue, sqs_client):
    # Given a FIFO queue and a winner that sends, then dies before it records the slot
    url, clock = make_queue(fifo=True), Clock(T0 + 0.5)
    registry = make_registry()
    sender = QueueSender(url)

    def send_then_die(spec: Any, slot: float) -> str:
        sender(spec, slot)
        raise Crash()

    with pytest.raises(Crash):
        scheduler(registry, store_url, url, clock, "dying", send=send_then_die).run_pass()
    # When another scheduler takes the slot over after the claim expired (and sends it again)
    clock.now = T0 + CLAIM_TTL + 1
    scheduler(registry, store_url, url, clock, "other").run_pass()
    # Then the queue holds one message for the slot: the deduplication id is the slot
    assert sent_slots(sqs_client, url) == grid(0, 1)


def test_a_send_that_fails_leaves_the_slot_to_the_next_pass(store_url, make_queue, sqs_client, caplog):
    # Given a scheduler whose queue refuses the first send (as a frozen or missing endpoint would)
    url, clock = make_queue(), Clock(T0 + 0.5)
    registry = make_registry()
    sender, failures = QueueSender(url), []

    def flaky_send(spec: Any, slot: float) -> str:
        if not failures:
            failures.append(slot)
            raise ConnectionError("endpoint unreachable")
        return sender(spec, slot)

    one = scheduler(registry, store_url, url, clock, "flaky", send=flaky_send)
    other = scheduler(registry, store_url, url, clock, "other")
    # When it passes, fails, and the clock moves on a second
    assert one.run_pass() == 0
    assert "schedule of report: endpoint unreachable" in caplog.text
    # Then its claim was let go at once: the next pass of any scheduler sends the slot, once
    clock.now += 1
    assert other.run_pass() + one.run_pass() == 1
    assert sent_slots(sqs_client, url) == grid(0, 1)


def test_a_slot_sent_while_the_store_fails_to_record_it_is_not_sent_again(store_url, make_queue, sqs_client):
    # Given a scheduler whose store takes claims but fails to record the first slot it sent
    url, clock = make_queue(), Clock(T0 + 0.5)
    registry = make_registry()
    failing = scheduler(registry, store_url, url, clock, "failing")
    real, outage = failing.store, {"on": True}

    class Outage:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def mark_fired(self, row: Any) -> bool:
            if outage["on"] and row.owner == "failing" and row.slot == T0:
                raise ConnectionError("job store unreachable")
            return bool(real.mark_fired(row))

    failing.store = Outage()  # type: ignore[assignment]
    other = scheduler(registry, store_url, url, clock, "other")
    # When it sends the slot and the record fails, and both schedulers pass on while the store is out
    for offset in (0.5, 1.5, 10, 30):
        clock.now = T0 + offset
        failing.run_pass()
        other.run_pass()
    # Then the slot went out once: the sender neither re-sends it nor lets go of its claim
    assert sent_slots(sqs_client, url) == grid(0, 1)
    # And once the store is back, the slot is recorded and the next ones go out as usual
    outage["on"] = False
    for step in range(1, 3 * 4 + 1):
        clock.now = T0 + 30 + step * PERIOD / 4
        failing.run_pass()
        other.run_pass()
    assert real.fired("report").slot == T0 + 3 * PERIOD
    assert sent_slots(sqs_client, url) == grid(1, 3)


def test_slots_go_to_a_durable_local_queue_too(store_url, tmp_path):
    from sqsmaster import open_queue

    # Given a schedule sending to a sqlite:// queue, and two schedulers
    queue_url, clock = f"sqlite:///{tmp_path}/queue.db?queue=periodic", Clock(T0 + 0.5)
    registry = make_registry()
    schedulers = [scheduler(registry, store_url, queue_url, clock, f"worker-{i}") for i in range(2)]
    # When they pass over three slots
    for step in range(3 * 2):
        clock.now = T0 + 0.5 + step * PERIOD / 2
        for one in schedulers:
            one.run_pass()
    # Then the queue holds one message per slot, each the task with no kwargs
    messages = open_queue(queue_url).receive(10, visibility_timeout=60)
    assert sorted(m.message_attributes["schedule_slot"]["StringValue"] for m in messages) == sorted(grid(0, 3))
    assert {m.body for m in messages} == {'{"task": "report", "kwargs": {}}'}
