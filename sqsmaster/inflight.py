"""How many SendMessageBatch requests to keep in flight: a latency-aware window, as TCP Vegas keeps its own.

Real SQS answers in 10-30 ms and has, for one client, practically unlimited
capacity: there, requests in flight hide the latency, and the client's own CPU is
the only limit. A local SQS-compatible server (moto on loopback) answers in well
under a millisecond but serves one request at a time: there, more requests in
flight only wait on each other and add contention. The window finds out which of
the two it faces, and keeps finding out, by timing every request.

Each request's round trip is timed, from taking its place to giving it back, so it
includes the client's own CPU (building, signing, parsing) and any wait for the
GIL. ``base`` is the shortest round trip seen since the last probe: what a request
costs when nothing waits. A round lasts one round trip: it ends when the first
:data:`ROUND_SAMPLES` requests started in it have ended, and the shortest of their
round trips, ``rtt``, tells how many of the ``window`` requests were waiting rather
than travelling::

    fits = window * base / rtt          # the requests that travel
    queued = window - fits              # the requests that wait

Fewer than ``alpha`` wait: the server and the client have room, the window grows
(doubling while it starts from :data:`INITIAL_WINDOW`, then by an eighth a round).
More than ``beta``: requests only wait on each other (a saturated server, or a
client out of CPU), the window shrinks to ``fits`` and half the tolerated queue, by
at most half a round. ``alpha`` and ``beta`` are :data:`ALPHA` and :data:`BETA`
requests, or half and all of ``fits`` when more: a client whose own CPU is the
bottleneck gets its answers in bursts that wait for the GIL in turn, so some
queueing is the price of keeping that CPU busy, while a saturated server (a pipe
of about one request) is held to about one request waiting. Only requests that
found the window full count (they alone show what a full window costs), and not
those a growth let go at once: they wait for each other's CPU, which says nothing
of the steady state.

Every :data:`PROBE_INTERVAL` seconds the window drops to one request for
:data:`PROBE_SAMPLES` requests, alone, to measure ``base`` afresh: so the window
follows the latency when it changes (a longer round trip would otherwise read as
queueing for ever; a probe that finds it longer starts the doubling again), at the
cost of a few round trips every few seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

logger = logging.getLogger(__name__)

#: Grow the window while fewer than this many requests (by the round trips) wait instead of travel...
ALPHA = 0.5
#: ...or fewer than this share of those that travel (a client out of CPU then keeps it about 98 % busy).
ALPHA_SHARE = 0.5
#: Shrink it while more than this many wait...
BETA = 1.5
#: ...and more than this share of those that travel.
BETA_SHARE = 1.0
#: Seconds between two measurements of the unloaded round trip (a request alone).
PROBE_INTERVAL = 5.0
#: Requests sent alone per measurement; the shortest of their round trips is the new ``base``.
PROBE_SAMPLES = 2
#: A probe that finds the unloaded round trip this many times longer than before doubles the window again.
RISEN = 1.25
#: Round trips per round: the shortest of them judges the window (a round lasts one round trip).
ROUND_SAMPLES = 8
#: Past its start, the window grows by one request a round, or by this fraction of itself if more.
GROWTH_SHARE = 8
#: Requests in flight at the start, as TCP starts with a few segments: a saturated server sheds the extra
#: within two round trips, a distant one saves two doublings.
INITIAL_WINDOW = 4


@dataclass(frozen=True)
class Ticket:
    """A place in the window: when the request took it, in which round, whether it is a probe (sent
    alone), and whether it is ``loaded``: it took the window's last place in the steady state (not in a
    burst a growth let go), so its round trip shows the queueing a full window causes."""

    started: float
    round: int
    probe: bool
    loaded: bool


class InFlightWindow:
    """The window's arithmetic, without threads or clocks: ``start`` and ``end`` take the time.

    ``limit`` is how many requests may be in flight now (1 while probing). The caller
    starts a request only while ``active < limit``; :class:`InFlightLimit` does the waiting.
    """

    def __init__(self, maximum: int, now: float) -> None:
        if maximum < 1:
            raise ValueError(f"max_in_flight must be >= 1, not {maximum}")
        self.maximum = maximum
        self.window = min(INITIAL_WINDOW, maximum)
        self.active = 0
        self.base = float("inf")
        self.slow_start = True
        self.probing = False
        self._probe_rtts: list[float] = []
        self._next_probe = now + PROBE_INTERVAL
        self._round = 0
        self._burst = self.window  # starts left that the last growth (or probe, or the start) lets go at once
        self._new_round()

    @property
    def limit(self) -> int:
        return 1 if self.probing else self.window

    def _new_round(self) -> None:
        self._round += 1
        # A round ends with the first requests started in it: one round trip, however large the window (a
        # window of 64 on a server that serves one request at a time would otherwise wait 64 services to react).
        self._round_left = min(self.window, ROUND_SAMPLES)
        self._round_rtt = float("inf")

    def start(self, now: float) -> Ticket:
        """Take a place (the caller checked ``active < limit``)."""
        self.active += 1
        burst = self._burst > 0
        if burst:
            # Requests let go at once by a growth of the window queue behind each other for the client's CPU:
            # their round trips show that burst, not the steady state, so they never count as loaded.
            self._burst -= 1
        return Ticket(now, self._round, self.probing and self.active == 1, self.active >= self.window and not burst)

    def end(self, ticket: Ticket, now: float, answered: bool = True) -> None:
        """Give the place back; adapt the window at the end of a round or a probe.

        A request that got no answer (``answered=False``: refused, timed out) says nothing of the
        round trip: it only frees its place.
        """
        self.active -= 1
        rtt = max(now - ticket.started, 1e-9) if answered else float("inf")
        if ticket.probe:
            self._probe_rtts.append(rtt)
            if len(self._probe_rtts) >= PROBE_SAMPLES:
                self._end_probe(now)
            return
        if not answered:
            return
        self.base = min(self.base, rtt)
        if self.probing or ticket.round != self._round:
            return  # started before the probe or under the previous window: says nothing of this one
        if ticket.loaded:  # the window, not the supply of batches, held the sending back
            self._round_rtt = min(self._round_rtt, rtt)
        self._round_left -= 1
        if self._round_left > 0:
            return
        before = self.window
        if self._round_rtt < float("inf"):
            self._adapt(self._round_rtt)
        self._burst = max(0, self.window - max(before, self.active))
        if now >= self._next_probe and self.maximum > 1:
            self.probing, self._probe_rtts = True, []
        self._new_round()

    def _adapt(self, rtt: float) -> None:
        fits = self.window * self.base / rtt  # requests the round trips say travel rather than wait
        queued = self.window - fits
        before = self.window
        # The thresholds grow with the pipe: a client whose own CPU is the bottleneck answers requests in bursts
        # (they return together and wait for the GIL in turn), and only a queue in proportion keeps that CPU busy.
        # A saturated server (a pipe of about one) keeps the absolute thresholds: one request waiting there.
        alpha, beta = max(ALPHA, ALPHA_SHARE * fits), max(BETA, BETA_SHARE * fits)
        if queued < alpha:
            grown = 2 * self.window if self.slow_start else self.window + max(1, self.window // GROWTH_SHARE)
            self.window = min(self.maximum, grown)
        elif queued > beta:
            # Straight down to what travels and half the tolerated queue, but never below half in one round:
            # one round slowed by something else (a pause of this process, a busy machine) must not empty the pipe.
            target = round(fits + (alpha + beta) / 2)
            self.window = max(1, min(self.window - 1, max(target, self.window // 2)))
            self.slow_start = False
        if self.window != before:
            logger.debug("in-flight window %d -> %d (round trip %.1f ms, unloaded %.1f ms)", before, self.window,
                         rtt * 1000, self.base * 1000)

    def _end_probe(self, now: float) -> None:
        base, measured = self.base, min(self._probe_rtts)
        if measured < float("inf"):  # else no probe got an answer: keep the base we had
            self.base = measured
            if measured > RISEN * base:
                # The server moved away: the pipe holds more now. Double again rather than climb an eighth a round.
                self.slow_start = True
                logger.debug("unloaded round trip %.1f -> %.1f ms", base * 1000, measured * 1000)
        self.probing = False
        self._burst = self.window - self.active  # the whole window starts at once after a probe
        self._next_probe = now + PROBE_INTERVAL
        self._new_round()


class InFlightLimit:
    """The window shared by sender threads: ``acquire`` blocks until the window has room."""

    def __init__(self, maximum: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._window = InFlightWindow(maximum, clock())
        self._condition = threading.Condition()

    @property
    def limit(self) -> int:
        """Requests that may be in flight now."""
        return self._window.limit

    def acquire(self) -> Ticket:
        """Wait for a free place, then take it; give it back with :meth:`release`."""
        with self._condition:
            while self._window.active >= self._window.limit:
                self._condition.wait()
            return self._window.start(self._clock())

    def release(self, ticket: Ticket, answered: bool = True) -> None:
        """Give the place back after the request ended; ``answered=False`` if it got no answer."""
        with self._condition:
            self._window.end(ticket, self._clock(), answered)
            room = self._window.limit - self._window.active
            if room > 0:
                # Wake only as many waiting threads as there are places: a notify_all would wake dozens of
                # sender threads to find one place, and cost the CPU the window is there to save.
                self._condition.notify(room)
