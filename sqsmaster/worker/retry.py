"""Retry policies (TaskTiger's vocabulary) and the ``Retry`` exception a task raises to ask for one.

The attempt number is the message's ``ApproximateReceiveCount`` (1 on the first
delivery), so retries survive worker crashes: SQS counts them, not us. A retry
is the message handed back with its visibility set to the delay, never a new
message. ``max_retries`` counts retries, so ``fixed(5, max_retries=2)`` runs a
task at most three times; after that the message goes to the dead-letter path.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigurationError, HandlerInterrupt, SqsMasterError
from ..lease import MAX_BACKOFF, default_backoff


class Retry(SqsMasterError):
    """Raise from a task to retry it: after ``delay`` seconds, or the task's policy delay when None.

    A task without a retry policy is retried with the default backoff, and the
    queue's redrive policy ends it; with a policy, ``max_retries`` still applies.
    """

    def __init__(self, delay: float | None = None, reason: str = "") -> None:
        self.delay = delay
        super().__init__(reason or (f"retry requested in {delay}s" if delay is not None else "retry requested"))


@dataclass(frozen=True)
class RetryPolicy:
    """``delay(attempt)`` seconds before the next attempt; at most ``max_retries`` retries.

    Build one with :func:`fixed`, :func:`linear` or :func:`exponential`.
    """

    kind: str
    base: float
    step: float
    max_retries: int

    def delay(self, attempt: int) -> int:
        """Seconds to hide the message after failed attempt ``attempt`` (1-based), capped at 900 s."""
        retry = max(attempt, 1) - 1
        if self.kind == "linear":
            seconds = self.base + self.step * retry
        elif self.kind == "exponential":
            seconds = self.base * self.step ** retry
        else:
            seconds = self.base
        return int(min(max(seconds, 0), MAX_BACKOFF))

    def exhausted(self, attempt: int) -> bool:
        """True when attempt ``attempt`` was the last one allowed."""
        return attempt > self.max_retries


def _check(delay: float, max_retries: int) -> None:
    if isinstance(delay, bool) or not isinstance(delay, (int, float)) or delay < 0:
        raise ConfigurationError(f"retry delay must be a number of seconds >= 0, not {delay!r}")
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ConfigurationError(f"max_retries must be an int >= 0, not {max_retries!r}")


def fixed(delay: float, max_retries: int) -> RetryPolicy:
    """Retry after the same ``delay`` each time."""
    _check(delay, max_retries)
    return RetryPolicy("fixed", delay, 0, max_retries)


def linear(delay: float, increment: float, max_retries: int) -> RetryPolicy:
    """Retry after ``delay``, ``delay + increment``, ``delay + 2 * increment``..."""
    _check(delay, max_retries)
    return RetryPolicy("linear", delay, increment, max_retries)


def exponential(delay: float, factor: float, max_retries: int) -> RetryPolicy:
    """Retry after ``delay``, ``delay * factor``, ``delay * factor ** 2``..."""
    _check(delay, max_retries)
    if factor < 1:
        raise ConfigurationError(f"exponential factor must be >= 1, not {factor!r}")
    return RetryPolicy("exponential", delay, factor, max_retries)


@dataclass(frozen=True)
class FailurePlan:
    """What to do with a failed attempt: retry after ``delay`` s, or dead-letter it (``delay`` is None)."""

    delay: int | None
    reason: str

    @property
    def retry(self) -> bool:
        return self.delay is not None


def plan_failure(error: BaseException, attempt: int, policy: RetryPolicy | None,
                 retry_on: tuple[type[BaseException], ...] | None) -> FailurePlan:
    """Retry or dead-letter, for ``error`` raised by attempt ``attempt``.

    Hard timeouts and stuck tasks count as failures under the policy whatever
    ``retry_on`` says; other exceptions not in ``retry_on`` go straight to the
    dead-letter path. Without a policy every failure is retried with the default
    backoff and the queue's redrive policy has the last word.
    """
    if isinstance(error, Retry) and error.delay is not None:
        delay = int(min(max(error.delay, 0), MAX_BACKOFF))
    elif policy is not None:
        delay = policy.delay(attempt)
    else:
        delay = default_backoff(attempt)
    if retry_on and not isinstance(error, (Retry, HandlerInterrupt, *retry_on)):
        return FailurePlan(None, f"{type(error).__name__} is not in retry_on")
    if policy is not None and policy.exhausted(attempt):
        return FailurePlan(None, f"attempt {attempt} was the last ({policy.max_retries} retries)")
    return FailurePlan(delay, "retry")
