"""Supervisors: how a task runs under its deadline; the registry of isolation modes.

``signal`` (:class:`SignalSupervisor`): the task runs in this process's main
thread under a SIGALRM :class:`~sqsmaster.supervise.deadline.Deadline` scoped to
``run()``. Python delivers signals only between bytecodes, so C code that holds
the GIL delays the deadline: use process isolation for such tasks.
``process`` (:mod:`sqsmaster.supervise.process`): the task runs in a forked child;
the parent enforces the deadline by killing the child's process group.

In both, the heartbeat thread (:mod:`sqsmaster.supervise.heartbeat`) keeps the
lease and asks ``running()``; both drive the same
:class:`~sqsmaster.supervise.policy.HeartbeatPolicy`. A fired interrupt is sticky:
if ``run()`` swallows it and returns, the supervisor raises it again.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from ..errors import ConfigurationError
from .deadline import Deadline, require_main_thread
from .heartbeat import Heartbeat
from .policy import HeartbeatPolicy, InterruptFactory


class Supervisor(Protocol):
    """Start supervising, run the task, stop. ``stop`` must be safe to call twice."""

    def start(self, heartbeat: Heartbeat) -> None:
        """Get ready to run (raise ConfigurationError when this mode cannot run here)."""

    def interrupt(self, make: InterruptFactory) -> None:
        """From the heartbeat thread: stop the task with ``make(elapsed)``."""

    def run(self, task: Callable[[], Any]) -> Any: ...

    def stop(self) -> None: ...


class SignalSupervisor:
    """Runs the task in the calling (main) thread; SIGALRM ticks enforce the policy's deadline."""

    def __init__(self, policy: HeartbeatPolicy, handler: Any = None) -> None:
        self.policy = policy
        self._wake: Callable[[], None] = lambda: None
        self._deadline: Deadline | None = None

    def start(self, heartbeat: Heartbeat) -> None:
        require_main_thread()
        self._wake = heartbeat.wake

    def interrupt(self, make: InterruptFactory) -> None:
        self.policy.fire(make)
        deadline = self._deadline
        if deadline is not None:
            deadline.request()  # a no-op once run() is over; before run(), run() raises it at once

    def run(self, task: Callable[[], Any]) -> Any:
        self.policy.open()
        try:
            interrupt = self.policy.take_interrupt()
            if interrupt is not None:  # fired before run(): the task does not start
                raise interrupt
            result = self._run_under_deadline(task)
        finally:
            self.policy.close()  # drops an interrupt fired as the task returned: it never reached the task
        interrupt = self.policy.interrupt()
        if interrupt is not None:  # the task swallowed it and returned: it still timed out
            raise interrupt
        return result

    def _run_under_deadline(self, task: Callable[[], Any]) -> Any:
        deadline = Deadline(self.policy, self._wake)
        with deadline:
            self._deadline = deadline
            try:
                try:
                    deadline.arm()
                    return task()
                finally:
                    deadline.closing = True  # first thing: a tick landing from here on does nothing
            finally:
                self._deadline = None

    def stop(self) -> None:
        """Nothing to do: the deadline was undone before run() returned."""


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
