"""Supervisors: how a task runs under its heartbeat and hard timeout.

``signal``: the task runs in this process; SIGALRM ticks (see :mod:`sqsmaster.alarms`)
extend the lease and raise :class:`~sqsmaster.errors.HardTimeoutExceeded` inside the
task at its deadline. Python delivers signals only between bytecodes, so C code
that holds the GIL delays both: use process isolation for such tasks.
``process`` (:mod:`sqsmaster.process`, registered through :func:`register_isolation`):
the task runs in a forked child; the parent drives the policy and kills the child's group.
Every supervisor drives the same :class:`~sqsmaster.lease.HeartbeatPolicy`.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from .alarms import Alarm
from .errors import ConfigurationError
from .lease import HeartbeatPolicy


class Supervisor(Protocol):
    """Start supervising, run the task, stop. ``stop`` must be safe to call twice."""

    def start(self) -> None: ...

    def run(self, task: Callable[[], Any]) -> Any: ...

    def stop(self) -> None: ...


class SignalSupervisor:
    """Runs the task in the calling (main) thread; SIGALRM drives the policy."""

    def __init__(self, policy: HeartbeatPolicy, handler: Any = None) -> None:
        self.policy = policy
        self._alarm: Alarm | None = None

    def start(self) -> None:
        # Extend first: a failed extension must not leave an alarm armed (sqstaskmaster's stray alarm).
        delay = self.policy.start()
        self._alarm = Alarm(self.policy.tick)
        self._alarm.__enter__()
        self._alarm.arm(delay)

    def run(self, task: Callable[[], Any]) -> Any:
        return task()

    def stop(self) -> None:
        alarm, self._alarm = self._alarm, None
        if alarm is not None:
            alarm.__exit__(None, None, None)


_SUPERVISORS: dict[str, Callable[[HeartbeatPolicy, Any], Supervisor]] = {"signal": SignalSupervisor}


def register_isolation(name: str, factory: Callable[[HeartbeatPolicy, Any], Supervisor]) -> None:
    """Make ``isolation = name`` build ``factory(policy, handler)``."""
    _SUPERVISORS[name] = factory


def make_supervisor(isolation: str, policy: HeartbeatPolicy, handler: Any) -> Supervisor:
    """The supervisor for an isolation mode; raises ConfigurationError for an unknown one."""
    try:
        factory = _SUPERVISORS[isolation]
    except KeyError:
        raise ConfigurationError(
            f"unknown isolation {isolation!r}; choose one of {', '.join(sorted(_SUPERVISORS))}") from None
    return factory(policy, handler)


def isolation_modes() -> list[str]:
    return sorted(_SUPERVISORS)
