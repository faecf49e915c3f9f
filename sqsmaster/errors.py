"""The sqsmaster error tree.

Every error the library raises derives from :class:`SqsMasterError`, except the
interrupts raised inside a running task, which are ``BaseException``s so that task
code's ``except Exception`` cannot swallow them: the time limits derive from
:class:`HandlerInterrupt`, and :class:`WorkerShutdown` stops a task when its worker must stop now.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError


class SqsMasterError(Exception):
    """Root of every error sqsmaster raises on purpose."""


class ConfigurationError(SqsMasterError, ValueError):
    """An argument or setting is invalid (a bad timeout, an unknown URL scheme...)."""


class LimitExceeded(ConfigurationError):
    """A value breaks an SQS limit; checked on our side before anything is sent.

    ``name`` is the argument, ``value`` what was given, ``limit`` the bound.
    """

    def __init__(self, name: str, value: object, limit: object, detail: str = "") -> None:
        self.name = name
        self.value = value
        self.limit = limit
        message = f"{name}={value!r} breaks the SQS limit {limit}"
        super().__init__(f"{message}: {detail}" if detail else message)


class MessageTooLarge(LimitExceeded):
    """An encoded message (body and attributes) is over the SQS size limit; nothing was sent."""

    def __init__(self, size: int, limit: int, task: str | None = None) -> None:
        self.size = size
        what = f"task {task!r}" if task else "message"
        super().__init__(
            "message size",
            size,
            limit,
            f"the encoded {what} is {size:,} bytes and SQS accepts at most {limit:,} bytes; "
            "pass large data by reference (an S3 key, a path)",
        )


class EncodeError(SqsMasterError, TypeError):
    """A keyword argument cannot be encoded to JSON; ``key`` names it, ``path`` the value inside it.

    ``path`` is ``key`` itself or a path into it (``stats['mean']``, ``tags[2]``).
    """

    def __init__(self, key: str, value: object, reason: str | None = None, path: str | None = None) -> None:
        self.key = key
        self.value = value
        self.path = path or key
        shown = self.path if len(self.path) <= 80 else f"{self.path[:77]}..."
        super().__init__(f"kwarg {key!r} cannot be encoded to JSON: {shown} "
                         f"{reason or f'is of type {type(value).__name__}, which JSON cannot hold'}")


class MalformedMessage(SqsMasterError, ValueError):
    """A received body is not a sqsmaster/sqstaskmaster task (bad JSON, a missing key).

    Also a ``ValueError``, as the ``JSONDecodeError`` sqstaskmaster passed to ``notify`` was;
    ``__cause__`` is the parser's own error (``JSONDecodeError``, or ``KeyError('task')`` for a
    missing key, as sqstaskmaster raised) when there was one.
    """

    def __init__(self, message_id: str | None, reason: str, task: str | None = None) -> None:
        self.message_id = message_id
        self.reason = reason
        self.task = task
        super().__init__(f"message {message_id} is malformed: {reason}")


class UnknownTask(SqsMasterError):
    """A message names a task that no handler is registered for."""

    def __init__(self, task: str, message_id: str | None = None) -> None:
        self.task = task
        self.message_id = message_id
        shown = repr(task) if len(task) <= 200 else f"{task[:200]!r}... ({len(task):,} characters)"
        super().__init__(f"message {message_id} names unknown task {shown}")


class TaskExit(SqsMasterError):
    """A task run by the worker raised SystemExit (``sys.exit()``) or KeyboardInterrupt.

    The worker counts it as that task's failure (retried, then dead-lettered like any
    other): a task does not get to end the worker process. ``code`` is ``SystemExit.code``.
    """

    def __init__(self, original: BaseException) -> None:
        self.code = getattr(original, "code", None)
        what = f"sys.exit({self.code!r})" if isinstance(original, SystemExit) else type(original).__name__
        super().__init__(f"the task raised {what}; a task cannot stop the worker, so this counts as its failure")


class QueueError(SqsMasterError, ClientError):
    """A queue operation failed (the server said no, or could not be reached).

    Also a botocore ``ClientError``, so code written for sqstaskmaster's ``except ClientError:``
    still catches queue failures. ``code`` is SQS's error code (``"AWS.SimpleQueueService.NonExistentQueue"``,
    ``"PurgeQueueInProgress"``...), None when no answer came (the endpoint could not be reached);
    ``response`` is botocore's error response when SQS answered (else one shaped like it, with
    ``response["Error"]["Code"]``), and ``__cause__`` the original botocore exception.
    """

    def __init__(self, message: str, *, code: str | None = None, response: dict[str, Any] | None = None,
                 operation: str | None = None) -> None:
        Exception.__init__(self, message)  # our message, not ClientError's template
        self.code = code if code is not None else (response or {}).get("Error", {}).get("Code")
        self.response = response if response is not None else {
            "Error": {"Code": self.code or type(self).__name__, "Message": message}}
        self.operation_name = operation or "unknown"

    def __reduce__(self) -> tuple:
        # ClientError's own __reduce__ would give back a plain ClientError; keep the class and its fields.
        return (_restore, (type(self), self.args, self.__dict__))


def _restore(cls: type, args: tuple, state: dict[str, Any]) -> BaseException:
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


#: SQS's error code for a queue that does not exist (also raised for missing local queues).
NONEXISTENT_QUEUE_CODE = "AWS.SimpleQueueService.NonExistentQueue"


class QueueDoesNotExist(QueueError):
    """The queue URL names no queue."""

    def __init__(self, message: str, *, code: str | None = None, response: dict[str, Any] | None = None,
                 operation: str | None = None) -> None:
        super().__init__(message, code=code or NONEXISTENT_QUEUE_CODE, response=response, operation=operation)


class CredentialsMissing(ConfigurationError):
    """No AWS credentials were found for a queue on AWS (a configuration problem, not an unreachable queue)."""


#: SQS error codes that mean our receipt handle no longer holds the message.
LEASE_LOST_CODES = frozenset({"ReceiptHandleIsInvalid", "MessageNotInflight", "InvalidParameterValue",
                              "AWS.SimpleQueueService.MessageNotInflight"})


class LeaseLost(QueueError):
    """The message's receipt handle is no longer valid: the message is not ours any more.

    Raised by ``change_visibility`` when SQS answers ``ReceiptHandleIsInvalid``,
    ``MessageNotInflight`` or ``InvalidParameterValue``.
    """

    def __init__(self, message_id: str | None, code: str, detail: str = "", *,
                 response: dict[str, Any] | None = None, operation: str | None = None) -> None:
        self.message_id = message_id
        super().__init__(f"lease on message {message_id} lost ({code}) {detail}".rstrip(), code=code,
                         response=response, operation=operation)


class HandlerInterrupt(BaseException):
    """Base of the interrupts a supervisor raises inside a running task.

    A ``BaseException`` on purpose (like dramatiq's ``Interrupt``): ``except Exception``
    in task code cannot catch it, so a time limit cannot be swallowed.
    """


class HardTimeoutExceeded(HandlerInterrupt):
    """The task ran past its hard timeout and was stopped."""

    def __init__(self, hard_timeout: float, elapsed: float | None = None) -> None:
        self.hard_timeout = hard_timeout
        self.elapsed = elapsed
        ran = f" after {elapsed:.2f}s" if elapsed is not None else ""
        super().__init__(f"hard timeout of {hard_timeout}s exceeded{ran}")


class TaskStuck(HandlerInterrupt):
    """The handler's ``running()`` returned False: the task is stuck and was stopped."""

    def __init__(self, elapsed: float) -> None:
        self.elapsed = elapsed
        super().__init__(f"task reported stuck by running() after {elapsed:.2f}s")


class TaskKilled(HandlerInterrupt):
    """An operator ordered the task stopped (``sqsmaster kill``, :meth:`MessageHandler.kill`): it was stopped
    as a hard timeout stops it, and its outcome is ``killed``."""

    def __init__(self, reason: str, elapsed: float | None = None) -> None:
        self.reason = reason
        self.elapsed = elapsed
        ran = f" after {elapsed:.2f}s" if elapsed is not None else ""
        super().__init__(f"task {reason}{ran}")


class TaskAbandoned(HandlerInterrupt):
    """The lease was lost while the task ran and ``on_lease_lost = "stop"``: the task was stopped."""

    def __init__(self, message_id: str | None, elapsed: float) -> None:
        self.message_id = message_id
        self.elapsed = elapsed
        super().__init__(f"lease on message {message_id} lost; task stopped after {elapsed:.2f}s "
                         "(on_lease_lost='stop')")


class WorkerShutdown(BaseException):
    """Raised inside a running task when the worker must stop it now (a second signal, or the grace ran out).

    Not a :class:`HandlerInterrupt`: ``MessageHandler`` treats it like KeyboardInterrupt,
    releasing the message with visibility 0 and re-raising. Task code must let it pass.
    """


class TaskFailed(SqsMasterError):
    """A task in process isolation raised; the child's exception, described in the parent.

    ``type_name`` (``"ValueError"``), ``message`` (``str(exc)``) and ``remote_traceback``
    (the child's formatted traceback) always come back; ``original`` is the
    exception itself when it could be pickled, else None.
    """

    def __init__(self, type_name: str, message: str, remote_traceback: str,
                 original: BaseException | None = None) -> None:
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback
        self.original = original
        super().__init__(f"task raised {type_name}: {message}\n--- traceback in the task process ---\n"
                         f"{remote_traceback.rstrip()}")


class TaskCrashed(SqsMasterError):
    """A task process ended without reporting a result: killed by a signal or ``os._exit``.

    ``signal`` is the signal name (``"SIGSEGV"``; ``"SIGKILL"`` is often the OOM
    killer) or None; ``exit_code`` the exit status when it exited, else None.
    """

    def __init__(self, pid: int, exit_code: int | None = None, signal: str | None = None, hint: str = "") -> None:
        self.pid = pid
        self.exit_code = exit_code
        self.signal = signal
        how = f"was killed by {signal}" if signal else f"exited with code {exit_code} before reporting a result"
        super().__init__(f"task process {pid} {how}" + (f" ({hint})" if hint else ""))


class MemoryCapExceeded(TaskCrashed):
    """A task process went over its ``max_memory_mb`` cap (an allocation failed, or it died of it)."""

    def __init__(self, pid: int, max_memory_mb: float, detail: str = "", exit_code: int | None = None,
                 signal: str | None = None) -> None:
        self.max_memory_mb = max_memory_mb
        super().__init__(pid, exit_code, signal)
        self.args = (f"task process {pid} exceeded its memory cap of {max_memory_mb} MiB"
                     + (f": {detail}" if detail else ""),)


class SubmitFailed(SqsMasterError):
    """``submit_many`` could not send every task.

    ``sent`` is how many were sent; ``failed`` lists the entries SQS refused even
    after the retries (:class:`sqsmaster.batching.FailedEntry`: ``index`` in the
    input, ``entry``, ``code``, ``message``); ``cause`` is the queue error that
    stopped the run early, if any (the tasks after it were not read).
    """

    def __init__(self, sent: int, failed: list, cause: BaseException | None = None) -> None:
        self.sent = sent
        self.failed = failed
        self.cause = cause
        codes: dict[str, int] = {}
        for item in failed:
            codes[item.code] = codes.get(item.code, 0) + 1
        parts = [f"sent {sent:,} task(s)"]
        if failed:
            summary = ", ".join(f"{count:,} x {code}" for code, count in sorted(codes.items()))
            first = failed[0]
            parts.append(f"{len(failed):,} could not be sent ({summary}; first: input #{first.index}: "
                         f"{first.message})")
        if cause is not None:
            parts.append(f"stopped early by a queue error: {cause}")
        super().__init__("; ".join(parts))

    def __reduce__(self) -> tuple:
        return (type(self), (self.sent, self.failed, self.cause))
