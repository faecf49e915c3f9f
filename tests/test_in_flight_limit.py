"""submit_many's in-flight window: it climbs against latency, stays low against a saturated server, follows changes.

Each test plays the window against a model of a server in simulated time (an
event queue, no threads, no sleeps), so the outcome is the same on any machine.
"""

from __future__ import annotations

import heapq
import random
import threading
from typing import Callable

import pytest

from sqsmaster.inflight import PROBE_INTERVAL, InFlightLimit, InFlightWindow, Ticket

BATCH = 10  # messages a request carries


class Distant:
    """Real SQS, as a client sees it: every request answers ``latency(now)`` seconds later, however many are out."""

    def __init__(self, latency: Callable[[float], float]) -> None:
        self.latency = latency

    def done(self, now: float) -> float:
        return now + self.latency(now)


class Saturated:
    """A server that serves one request at a time, ``service`` seconds each (moto on loopback)."""

    def __init__(self, service: float | Callable[[], float]) -> None:
        self.service = service if callable(service) else (lambda: service)
        self.free = 0.0

    def done(self, now: float) -> float:
        self.free = max(self.free, now) + self.service()
        return self.free


class ClientBound(Distant):
    """A distant server, and a client that needs ``cpu`` seconds of its one CPU (the GIL) per request."""

    def __init__(self, cpu: float | Callable[[], float], latency: Callable[[float], float]) -> None:
        super().__init__(latency)
        self.cpu = cpu if callable(cpu) else (lambda: cpu)
        self.cpu_free = 0.0

    def done(self, now: float) -> float:
        self.cpu_free = max(self.cpu_free, now) + self.cpu()
        return self.cpu_free + self.latency(now)


class Run:
    """The window against a server model from t=0 to ``seconds``; what was sent, and the window, over time."""

    def __init__(self, server: Distant | Saturated, seconds: float, maximum: int = 64) -> None:
        self.window = InFlightWindow(maximum, 0.0)
        self.ended: list[float] = []  # when each request ended
        self.limits: list[tuple[float, int]] = []  # (time, window) after each end
        pending: list[tuple[float, int, Ticket]] = []
        now, serial = 0.0, 0
        while now < seconds:
            while self.window.active < self.window.limit:
                ticket = self.window.start(now)
                serial += 1
                heapq.heappush(pending, (server.done(now), serial, ticket))
            now, _, ticket = heapq.heappop(pending)
            self.window.end(ticket, now)
            self.ended.append(now)
            self.limits.append((now, self.window.window))

    def rate(self, start: float, end: float) -> float:
        """Messages a second sent between ``start`` and ``end``."""
        return sum(start <= t < end for t in self.ended) * BATCH / (end - start)

    def windows(self, start: float, end: float) -> list[int]:
        return [limit for t, limit in self.limits if start <= t < end]


def test_against_a_distant_server_the_window_climbs_to_the_maximum_within_a_second():
    # Given real SQS 20 ms away, with room for any number of requests
    run = Run(Distant(lambda now: 0.020), seconds=3)

    # Then the window doubles to the ceiling within a second, and sends at the ceiling's rate
    assert max(run.windows(0, 1)) == 64
    assert run.rate(1, 3) >= 0.9 * 64 * BATCH / 0.020


def test_against_a_saturated_server_the_window_stays_low_and_loses_nothing():
    # Given a server that answers one request at a time, 20 ms each
    run = Run(Saturated(0.020), seconds=30)

    # Then at most two requests are out (one served, one waiting) and the server is kept busy
    assert max(run.windows(1, 30)) <= 2
    assert run.rate(1, 30) >= 0.99 * BATCH / 0.020


def test_a_client_out_of_cpu_keeps_it_busy_without_going_to_the_ceiling():
    # Given a distant server 20 ms away and a client that needs 1.5 ms of CPU per request
    run = Run(ClientBound(0.0015, lambda now: 0.020), seconds=30)

    # Then it sends at the CPU's rate with the requests that fill 20 ms (14) and a queue as long at most, not 64
    knee = 0.020 / 0.0015 + 1
    assert run.rate(2, 30) >= 0.95 * BATCH / 0.0015
    assert max(run.windows(5, 30)) <= 2 * knee


def test_a_client_whose_cpu_time_varies_keeps_it_busy():
    # Given a client needing 1.5 ms of CPU a request on average, drawn at random (answers that come back
    # together wait for the GIL in turn), and a server 20 ms away
    draw = random.Random(3)
    run = Run(ClientBound(lambda: draw.expovariate(1 / 0.0015), lambda now: 0.020), seconds=30)

    # Then the CPU is kept at least 95 % busy
    assert run.rate(2, 30) >= 0.95 * BATCH / 0.0015


def test_when_the_latency_rises_the_window_follows_it_up():
    # Given a client with 1 ms of CPU per request, and a server 20 ms away that moves 60 ms away at t=10 s
    run = Run(ClientBound(0.001, lambda now: 0.020 if now < 10 else 0.060), seconds=30)

    # Then within two probe intervals the window holds what fills 60 ms, and sending is back at the CPU's rate
    settled = 10 + 2 * PROBE_INTERVAL
    assert run.rate(2, 10) >= 0.95 * BATCH / 0.001
    assert min(run.windows(settled, 30)) >= 0.060 / 0.001 - 3
    assert run.rate(settled, 30) >= 0.9 * BATCH / 0.001


def test_when_the_latency_falls_the_window_follows_it_down():
    # Given the same client, and a server 60 ms away that comes within 5 ms at t=10 s
    run = Run(ClientBound(0.001, lambda now: 0.060 if now < 10 else 0.005), seconds=30)

    # Then the window shrinks to what fills 5 ms (and a queue), sending at the CPU's rate throughout
    knee = 0.005 / 0.001 + 1
    assert run.rate(2, 30) >= 0.95 * BATCH / 0.001
    assert max(run.windows(12, 30)) <= 2 * knee


def test_when_a_distant_server_saturates_the_window_comes_down_to_it():
    # Given a server with room for everything until t=5 s, then serving one request at a time (10 ms each)
    distant, saturated = Distant(lambda now: 0.020), Saturated(0.010)
    run = Run(_Switch(distant, saturated, at=5.0), seconds=20)

    # Then the window drops from the ceiling to at most two, and the server stays busy
    assert max(run.windows(0, 5)) == 64
    assert max(run.windows(8, 20)) <= 2
    assert run.rate(8, 20) >= 0.99 * BATCH / 0.010


def test_jittery_round_trips_do_not_hold_the_window_back():
    # Given real SQS 20-30 ms away (each answer drawn at random; seeded, so every run is the same)
    jitter = random.Random(12)
    run = Run(Distant(lambda now: 0.020 + jitter.uniform(0, 0.010)), seconds=10)

    # Then the window still climbs near the ceiling and sends near the ceiling's rate
    assert min(run.windows(2, 10)) >= 48
    assert run.rate(2, 10) >= 0.8 * 64 * BATCH / 0.025


def test_jitter_does_not_push_a_saturated_server_harder():
    # Given a server serving one request at a time, 8-12 ms each
    jitter = random.Random(7)
    run = Run(Saturated(lambda: jitter.uniform(0.008, 0.012)), seconds=30)

    # Then at most three requests are out, and the server is kept busy
    assert max(run.windows(1, 30)) <= 3
    assert run.rate(1, 30) >= 0.98 * BATCH / 0.010


class _Switch:
    def __init__(self, before: Distant | Saturated, after: Distant | Saturated, at: float) -> None:
        self.before, self.after, self.at = before, after, at

    def done(self, now: float) -> float:
        return (self.before if now < self.at else self.after).done(now)


@pytest.mark.parametrize("maximum", [1, 3])
def test_the_window_never_passes_max_in_flight(maximum):
    run = Run(Distant(lambda now: 0.020), seconds=2, maximum=maximum)
    assert max(run.windows(0, 2)) == maximum


def test_threads_never_have_more_requests_out_than_the_window_allows():
    # Given 16 threads sharing one limit of at most 4, each holding its place a moment
    limit = InFlightLimit(4)
    out, most, lock = [0], [0], threading.Lock()
    gate = threading.Event()

    def send() -> None:
        for _ in range(20):
            ticket = limit.acquire()
            with lock:
                out[0] += 1
                most[0] = max(most[0], out[0])
            gate.wait(0.001)
            with lock:
                out[0] -= 1
            limit.release(ticket)

    threads = [threading.Thread(target=send) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    # Then every request was sent, never more than 4 at once
    assert not any(thread.is_alive() for thread in threads)
    assert 1 <= most[0] <= 4 and out[0] == 0


def test_requests_without_an_answer_free_their_place_but_do_not_teach_the_window():
    # Given a window that found a server 20 ms away, then three requests that failed at once (refused)
    window = InFlightWindow(8, 0.0)
    now = 0.0
    for _ in range(20):  # rounds at 20 ms: the window grows to its maximum
        tickets = [window.start(now) for _ in range(window.limit - window.active)]
        now += 0.020
        for ticket in tickets:
            window.end(ticket, now)
    failed = [window.start(now) for _ in range(3)]
    for ticket in failed:
        window.end(ticket, now + 0.0001, answered=False)

    # Then their places are free and the window still measures 20 ms, not 0.1 ms
    assert window.active == 0
    assert window.base == pytest.approx(0.020) and window.window == 8
