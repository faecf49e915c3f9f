"""``MessageHandler``: the context manager that runs one task under supervision and acknowledges it.

Success deletes the message. An exception, a hard timeout or a stuck task calls
``notify``, is logged, and hands the message back to SQS with a backoff (never
deleted); the ``with`` block then swallows it so a consumer loop goes on: no
:class:`~sqsmaster.errors.HandlerInterrupt` ever leaves it. KeyboardInterrupt and
SystemExit are notified too, release the message (visible at once) and propagate.

A fired deadline is remembered: whatever ``run()`` did with the interrupt (a bare
``except:``, a ``return`` in ``finally``), the outcome is "timed out" and the
message is not deleted. The same holds once ``running()`` said False.
"""

from __future__ import annotations

import functools
import logging
from types import TracebackType
from typing import Any, Callable, ClassVar

from ..errors import (
    ConfigurationError,
    HandlerInterrupt,
    HardTimeoutExceeded,
    LeaseLost,
    QueueError,
    TaskAbandoned,
    TaskKilled,
    TaskStuck,
)
from ..lease import (
    RELEASE_TIMEOUT,
    Lease,
    default_backoff,
    message_id_of,
    notify_context,
    receive_count,
)
from ..limits import MAX_VISIBILITY_TIMEOUT, check_range, check_seconds
from ..outcomes import Outcome
from . import process  # noqa: F401  (registers isolation "process")
from .heartbeat import Heartbeat
from .policy import ON_LEASE_LOST, HeartbeatPolicy, heartbeat_call_timeout
from .supervisor import Supervisor, isolation_modes, make_supervisor

logger = logging.getLogger(__name__)

#: Default hard timeout, as in sqstaskmaster: four hours.
DEFAULT_HARD_TIMEOUT = 4 * 60 * 60


def _overtaken(interrupt: HandlerInterrupt) -> BaseException | None:
    """A KeyboardInterrupt, SystemExit or the worker's shutdown that ``interrupt`` was raised on top of
    (the two signals came together: a tick landed while the task unwound from a Ctrl-C), else None."""
    seen: set[int] = set()
    context = interrupt.__context__
    while context is not None and id(context) not in seen:
        if not isinstance(context, (Exception, HandlerInterrupt)):
            return context
        seen.add(id(context))
        context = context.__context__
    return None


def _supervised(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def run(self: "MessageHandler", *args: Any, **kwargs: Any) -> Any:
        return self._run_supervised(original, args, kwargs)

    run._sqsmaster_original = original  # type: ignore[attr-defined]
    return run


class MessageHandler:
    """Run one message's task with a visibility heartbeat and a hard timeout.

    Subclass it and write ``run()``; optionally ``running()`` (return False when
    the task is stuck) and ``notify(exception, context=None)`` (report failures to
    an error service; they are logged anyway). Extra keyword arguments are kept
    in ``self.kwargs``.

    :param message: a received message (sqsmaster's, or a boto3 ``sqs.Message``)
    :param sqs_timeout: visibility to keep on the message while the task runs (s)
    :param alarm_timeout: heartbeat period (s); at least 1 s shorter than ``sqs_timeout``
    :param hard_timeout: the task is stopped after this many seconds (default 4 hours)
    :raises ConfigurationError: (a ValueError) for timeouts that cannot work

    After the ``with`` block, ``outcome`` is one of ``succeeded``, ``failed``,
    ``timed out``, ``stuck``, ``killed`` (:meth:`kill`), ``lease lost``, ``interrupted``;
    ``exception`` and ``runtime`` say more.
    """

    #: "signal": run in this process under SIGALRM; "process": run in a forked child process
    #: (needed when the task sits in C code that holds the GIL; see sqsmaster.supervise.process).
    isolation: ClassVar[str] = "signal"
    #: Once the lease is lost: "continue" lets the task run to its end (its delete is then logged
    #: as unsafe), "stop" stops it at the next heartbeat (outcome "lease lost").
    on_lease_lost: ClassVar[str] = "continue"
    #: Process isolation: seconds from SIGTERM to SIGKILL of the task's process group at a hard timeout.
    kill_grace: ClassVar[float] = 5.0
    #: Process isolation: the task may map at most this many MiB more than the worker had (None: no cap).
    max_memory_mb: ClassVar[float | None] = None

    def __init__(self, message: Any, sqs_timeout: float, alarm_timeout: float,
                 hard_timeout: float = DEFAULT_HARD_TIMEOUT, **kwargs: Any) -> None:
        check_range("sqs_timeout", sqs_timeout, 1, MAX_VISIBILITY_TIMEOUT)
        check_seconds("alarm_timeout", alarm_timeout)
        check_seconds("hard_timeout", hard_timeout)
        if alarm_timeout + 1 >= sqs_timeout:
            raise ConfigurationError(
                f"alarm_timeout={alarm_timeout} must be more than 1 s shorter than sqs_timeout={sqs_timeout}, "
                "so each heartbeat lands before the message's visibility expires")
        if self.isolation not in isolation_modes():
            raise ConfigurationError(f"unknown isolation {self.isolation!r}; choose one of {isolation_modes()}")
        if self.on_lease_lost not in ON_LEASE_LOST:
            raise ConfigurationError(f"on_lease_lost={self.on_lease_lost!r}; choose one of {ON_LEASE_LOST}")
        self._message = message
        self.sqs_timeout = sqs_timeout
        self.alarm_timeout = alarm_timeout
        self.hard_timeout = hard_timeout
        self.kwargs = kwargs
        self.outcome: str | None = None
        self.exception: BaseException | None = None
        self.runtime: float | None = None
        #: Peak resident memory (bytes) of the task's own process, when the supervisor measured it.
        self.peak_memory: int | None = None
        self._supervisor: Supervisor | None = None
        self._lease: Lease | None = None
        self._policy: HeartbeatPolicy | None = None
        self._heartbeat: Heartbeat | None = None
        self._start_error: Exception | None = None
        self._in_run = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        run = cls.__dict__.get("run")
        if run is not None and not hasattr(run, "_sqsmaster_original"):
            cls.run = _supervised(run)  # type: ignore[method-assign]

    # -- what subclasses write ----------------------------------------------------------------

    def run(self) -> Any:
        """The task. Runs inside the ``with`` block, under the supervisor."""
        raise NotImplementedError("subclass MessageHandler and write run()")

    def running(self) -> bool:
        """Return False when the task is stuck; it is then stopped like a hard timeout.

        Called at each heartbeat from the heartbeat thread (in process isolation, in
        the parent process), while ``run()`` goes on in the main thread (or the child).
        """
        return True

    def notify(self, exception: BaseException, context: dict[str, Any] | None = None) -> None:
        """Report a failure outside the log (Sentry, Honeybadger...). Failures are logged anyway."""

    def acknowledge(self) -> None:
        """Delete the message after the task succeeded; raise if the delete failed.

        Override to defer the delete (the worker batches them, see :mod:`sqsmaster.worker.deletes`).
        """
        assert self._lease is not None, "acknowledge() outside the with block"
        self._lease.delete()

    def kill(self, reason: str = "killed") -> None:
        """Stop the running task as a hard timeout would (in process isolation its whole process group),
        with the outcome ``killed``: an operator's order. Safe from any thread (the heartbeat thread's, in
        ``running()``, included). A task that already ended keeps its own outcome: the first to happen wins."""
        supervisor = self._supervisor
        if supervisor is not None:
            supervisor.interrupt(lambda elapsed: TaskKilled(reason, elapsed))

    def backoff(self, receive_count: int) -> int:
        """Seconds to hide a failed message before its next attempt; ``min(2**(n-1), 900)``."""
        return default_backoff(receive_count)

    # -- supervision --------------------------------------------------------------------------

    @property
    def message(self) -> Any:
        return self._message

    @property
    def message_id(self) -> str | None:
        return message_id_of(self._message)

    @property
    def lease(self) -> Lease | None:
        """The message's lease while (and after) the handler runs: ``extensions``, ``lost``..."""
        return self._lease

    def heartbeat_lag(self) -> float:
        """Asked from ``running()`` (on the heartbeat thread, as a beat starts): how late (s) this beat runs
        against its schedule; 0 outside the ``with`` block."""
        return 0.0 if self._policy is None else self._policy.beat_lag()

    def context(self) -> dict[str, Any]:
        """What ``notify`` receives as context: ``{"body": ..., **message.attributes}`` as in sqstaskmaster,
        and ``"message_id"`` when the message has one."""
        return notify_context(self._message)

    def _run_supervised(self, original: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        if self._in_run or self._supervisor is None:  # super().run(), or called outside `with`
            return original(self, *args, **kwargs)
        if self._start_error is not None:
            raise self._start_error
        self._in_run = True
        try:
            return self._supervisor.run(functools.partial(original, self, *args, **kwargs))
        finally:
            self._in_run = False

    def __enter__(self) -> "MessageHandler":
        lease = self._lease = Lease(self._message,
                                    call_timeout=heartbeat_call_timeout(self.sqs_timeout, self.alarm_timeout))
        lease.prepare(RELEASE_TIMEOUT)  # its clients are made now, not on the task's clock
        policy = self._policy = HeartbeatPolicy(self.sqs_timeout, self.alarm_timeout, self.hard_timeout,
                                                on_lease_lost=self.on_lease_lost)
        supervisor = make_supervisor(self.isolation, policy, self)
        heartbeat = Heartbeat(policy, lease, self.running, supervisor.interrupt)
        supervisor.start(heartbeat)  # ConfigurationError (signal isolation off the main thread) propagates
        self._supervisor, self._heartbeat = supervisor, heartbeat
        try:
            self._take_lease()
        except BaseException:  # Ctrl-C in the extension: __exit__ will not run, so undo what start() opened
            self._stop_supervising()
            raise
        logger.info("message %s: started (attempt %d, isolation %s)", self.message_id,
                    receive_count(self._message), self.isolation)
        return self

    def _take_lease(self) -> None:
        """Extend before the heartbeat starts, and only when the receive did not already hide the message
        long enough: a message that is not ours (or an endpoint that does not answer) gets no heartbeat."""
        assert self._policy is not None and self._lease is not None and self._heartbeat is not None
        try:
            if self._policy.needs_initial_extension(self._lease.received_visibility, self._lease.remaining()):
                self._lease.take(self.sqs_timeout)
        except (LeaseLost, QueueError) as exc:
            # Not ours (or unreachable): the task must not start; run() raises this instead.
            self._start_error = exc
            self._lease.lost = isinstance(exc, LeaseLost)
            logger.error("message %s: could not take the lease before starting (%s); the task will not run",
                         self.message_id, exc)
        else:
            self._heartbeat.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        assert self._lease is not None and self._policy is not None, "__exit__ without __enter__"
        self._stop_supervising()
        self.runtime = self._policy.elapsed()
        error = self._ending_error(exc)
        if error is None:
            self.outcome = Outcome.SUCCEEDED
            self._acknowledge()
            return False
        self.exception = error
        if not isinstance(error, (Exception, HandlerInterrupt)):
            self.outcome = Outcome.INTERRUPTED
            self._notify_safely(error)
            logger.warning("message %s: %s during the task; released for another worker",
                           self.message_id, type(error).__name__)
            self._lease.release(0, timeout=RELEASE_TIMEOUT)
            if error is not exc:  # a Ctrl-C that an interrupt overtook on its way out: the Ctrl-C goes on
                raise error
            return False
        self.outcome = (Outcome.TIMED_OUT if isinstance(error, HardTimeoutExceeded)
                        else Outcome.KILLED if isinstance(error, TaskKilled)
                        else Outcome.STUCK if isinstance(error, TaskStuck)
                        else Outcome.LEASE_LOST if isinstance(error, TaskAbandoned) else Outcome.FAILED)
        self._report(error)
        delay = self.backoff(receive_count(self._message))
        if self._lease.release(delay, timeout=RELEASE_TIMEOUT):
            logger.info("message %s: %s in %ss", self.message_id,
                        "visible again" if isinstance(error, TaskKilled) else "retry scheduled", delay)
        return True

    def _stop_supervising(self) -> None:
        """Stop the task process (if any) and the heartbeat, each bounded; late heartbeat results are ignored."""
        assert self._lease is not None
        supervisor, self._supervisor = self._supervisor, None
        heartbeat, self._heartbeat = self._heartbeat, None
        try:
            if supervisor is not None:
                supervisor.stop()
                self.peak_memory = getattr(supervisor, "peak_memory", None)
        finally:
            if heartbeat is not None:
                heartbeat.stop()
            self._lease.retire()

    def _ending_error(self, exc: BaseException | None) -> BaseException | None:
        """What ended the block: a KeyboardInterrupt/SystemExit as is; else a fired interrupt wins (the
        task may have swallowed it and returned, or turned it into another error); else exc or the start error."""
        assert self._policy is not None
        if exc is not None and not isinstance(exc, (Exception, HandlerInterrupt)):
            return exc
        if isinstance(exc, HandlerInterrupt):
            return _overtaken(exc) or exc
        interrupt = self._policy.interrupt()
        if interrupt is not None:
            if exc is not None:
                interrupt.__context__ = exc
            return interrupt
        return exc if exc is not None else self._start_error

    def _notify_safely(self, error: BaseException) -> None:
        try:
            self.notify(error, context=self.context())
        except Exception:
            logger.exception("message %s: notify() itself failed", self.message_id)

    def _report(self, error: BaseException) -> None:
        if isinstance(error, TaskKilled):  # an order, not a failure: nothing to notify, no traceback
            logger.warning("message %s: %s", self.message_id, error)
            return
        self._notify_safely(error)
        logger.error("message %s: task %s after %.2fs: %s: %s", self.message_id, self.outcome, self.runtime,
                     type(error).__name__, error, exc_info=(type(error), error, error.__traceback__))

    def _acknowledge(self) -> None:
        assert self._lease is not None
        if self._lease.lost:
            logger.error("message %s: task succeeded but its lease was lost; deleting with the old receipt "
                         "handle, the message may run again", self.message_id)
        try:
            self.acknowledge()
        except Exception as exc:
            self._notify_safely(exc)
            logger.error("message %s: task succeeded but the delete failed (%s); it will run again",
                         self.message_id, exc)
            return
        logger.info("message %s: succeeded in %.2fs, deleted", self.message_id, self.runtime)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(message_id={self.message_id!r}, sqs_timeout={self.sqs_timeout}, "
                f"alarm_timeout={self.alarm_timeout}, hard_timeout={self.hard_timeout}, outcome={self.outcome!r})")
