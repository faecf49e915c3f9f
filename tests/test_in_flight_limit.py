"""submit_many's in-flight limit climbs against a distant server and stays low against a saturated one."""

from __future__ import annotations

import pytest

from sqsmaster.batching import InFlightLimit


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def settle(seconds_per_batch, maximum: int = 8, batches: int = 400) -> InFlightLimit:
    """Send ``batches`` of 10 through the limit; a batch takes ``seconds_per_batch(limit)`` of the sender's time."""
    clock = Clock()
    limit = InFlightLimit(maximum, clock=clock)
    for _ in range(batches):
        limit.acquire()
        clock.now += seconds_per_batch(limit.limit)
        limit.release(10)
    return limit


def test_against_a_distant_server_the_limit_climbs_to_the_maximum():
    # 20 ms a request, and requests overlap: n in flight send n times faster
    limit = settle(lambda in_flight: 0.020 / in_flight)
    assert (limit.limit, limit.settled) == (8, True)


def test_against_a_saturated_server_the_limit_stays_at_one():
    # the server itself takes 20 ms a batch, however many requests wait on it
    limit = settle(lambda in_flight: 0.020)
    assert (limit.limit, limit.settled) == (1, True)


def test_the_limit_stops_where_doubling_stops_paying():
    # two in flight hide the latency; beyond that the server is the bottleneck
    limit = settle(lambda in_flight: 0.020 / min(in_flight, 2))
    assert (limit.limit, limit.settled) == (2, True)


@pytest.mark.parametrize("maximum", [1, 3])
def test_the_limit_never_passes_max_in_flight(maximum):
    limit = settle(lambda in_flight: 0.020 / in_flight, maximum=maximum)
    assert limit.limit == maximum
