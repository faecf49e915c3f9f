"""The task registry: ``@task`` names a function or a ``MessageHandler`` subclass so a worker can run it.

::

    from sqsmaster import task, fixed

    @task
    def resize(path: str, width: int) -> None: ...          # called with the message's kwargs

    @task(name="train", hard_timeout=3600, retry=fixed(60, max_retries=3), retry_on=(IOError,))
    class Train(MessageHandler):                            # a handler class runs as usual
        def run(self) -> None: ...

Tasks decorated with plain ``@task`` go to :data:`default_registry`; a module
may build its own :class:`Registry` instead. :func:`load_tasks` imports a module
and returns the registry a worker should use.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Union

from ..errors import ConfigurationError, MalformedMessage, TaskKilled, UnknownTask
from ..lease import receive_count
from ..limits import MAX_DELAY_SECONDS
from ..supervise import MessageHandler, isolation_modes
from .deletes import DeleteBatcher
from .orders import kill_visibility
from .retry import FailurePlan, Retry, RetryPolicy, plan_failure
from .schedules import Schedule
from .worklog import log_event

Target = Union[Callable[..., Any], type]

#: Most messages one batch call may take: its kwargs all travel to one process, and every message's lease is
#: extended while it runs (ten to a ChangeMessageVisibilityBatch call).
MAX_BATCH_SIZE = 1000
#: How long (s) a worker goes on receiving to fill a batch after the receive that brought its first message.
DEFAULT_BATCH_WAIT = 1.0
#: Longest ``batch_wait``: the batch's first message waits that long unrun (its lease heartbeated meanwhile).
MAX_BATCH_WAIT = 60.0
#: Options ``@task`` takes.
TASK_OPTIONS = frozenset({"hard_timeout", "sqs_timeout", "alarm_timeout", "isolation", "retry", "retry_on",
                          "batch", "batch_wait", "schedule", "lock", "lock_key", "lock_retry"})
#: Seconds a message that found its task's lock held waits before it comes back.
DEFAULT_LOCK_RETRY = 5


@dataclass(frozen=True)
class TaskSpec:
    """A registered task: its name, what runs, and the options that override the worker's."""

    name: str
    target: Target
    hard_timeout: float | None = None
    sqs_timeout: float | None = None
    alarm_timeout: float | None = None
    isolation: str | None = None
    retry: RetryPolicy | None = None
    retry_on: tuple[type[BaseException], ...] | None = None
    #: Batch tasks: up to this many messages of the task go to one call, as a list of their kwargs.
    batch: int | None = None
    #: Batch tasks: how long (s) the worker goes on receiving to fill a batch after its first message.
    batch_wait: float = DEFAULT_BATCH_WAIT
    #: A periodic task's :class:`~sqsmaster.worker.schedules.Schedule` (sent by the workers' schedulers).
    schedule: Schedule | None = None
    #: Never two runs at once (``lock``), or never two with the same values of these kwargs (``lock_key``).
    lock: bool = False
    lock_key: tuple[str, ...] | None = None
    #: Seconds before a message that found its lock held comes back (a new message, not a failure).
    lock_retry: int = DEFAULT_LOCK_RETRY
    _classes: dict[str, type] = field(default_factory=dict, compare=False, repr=False)

    def check_kwargs(self, kwargs: dict[str, Any], message_id: str | None = None) -> None:
        """Raise :class:`MalformedMessage` when a function task cannot be called with ``kwargs`` (a missing
        or unknown argument): no run could succeed. A handler class, or a batch task (it takes a list), takes any."""
        if isinstance(self.target, type) or self.batch is not None:
            return
        try:
            signature = inspect.signature(self.target)
        except (TypeError, ValueError):  # a builtin or C function without a signature: let the call decide
            return
        try:
            signature.bind(**kwargs)
        except TypeError as exc:
            raise MalformedMessage(message_id, f"its kwargs do not fit task {self.name!r}: {exc}", self.name) from None

    def handler_class(self, default_isolation: str) -> type["WorkerHandler"]:
        """The MessageHandler subclass a worker instantiates for this task (made once per isolation)."""
        isolation = self.isolation or _own_isolation(self.target) or default_isolation
        cls = self._classes.get(isolation)
        if cls is None:
            base = self.target if isinstance(self.target, type) else BatchTask if self.batch else FunctionTask
            attributes: dict[str, Any] = {"isolation": isolation, "spec": self}
            if base in (FunctionTask, BatchTask):
                attributes["function"] = staticmethod(self.target)
            cls = type(f"{self.name}Task", (WorkerHandler, base), attributes)
            self._classes[isolation] = cls
        return cls


def _check_batch(target: Target, options: dict[str, Any]) -> None:
    batch, wait = options.get("batch"), options.get("batch_wait", DEFAULT_BATCH_WAIT)
    if batch is None:
        if "batch_wait" in options:
            raise ConfigurationError("batch_wait= needs batch=N")
        return
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= MAX_BATCH_SIZE:
        raise ConfigurationError(f"batch must be an integer from 1 to {MAX_BATCH_SIZE} (MAX_BATCH_SIZE), not {batch!r}")
    if isinstance(target, type):
        raise ConfigurationError("batch= takes a function of one argument (the list of kwargs), not a handler class")
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait <= MAX_BATCH_WAIT:
        raise ConfigurationError(f"batch_wait must be from 0 to {MAX_BATCH_WAIT} seconds (MAX_BATCH_WAIT), "
                                 f"not {wait!r}")


def _own_isolation(target: Target) -> str | None:
    if not isinstance(target, type):
        return None
    for klass in target.__mro__:
        if klass is MessageHandler:
            return None
        if "isolation" in klass.__dict__:
            return str(klass.__dict__["isolation"])
    return None


class FunctionTask(MessageHandler):
    """Runs a registered function with the message's kwargs."""

    function: ClassVar[Callable[..., Any]]

    def run(self) -> Any:
        return type(self).function(**self.kwargs)


class BatchTask(MessageHandler):
    """Runs a batch task's function once with the kwargs of every message of the batch (a list).

    ``batch`` is set by the worker before the run: the first message's kwargs, then the others'."""

    function: ClassVar[Callable[..., Any]]
    batch: list[dict[str, Any]] = []

    def run(self) -> Any:
        return type(self).function(self.batch if self.batch else [self.kwargs])


class WorkerHandler(MessageHandler):
    """What the worker adds to every task's handler: the retry policy and the dead-letter hand-back.

    ``dead_letter_visibility`` (set by the worker) is how long a message past its
    last retry stays hidden: 0 when the queue's redrive policy will move it, long
    enough to send it to an explicit DLQ first, or 15 minutes when it is kept.
    After the ``with`` block, ``plan`` says whether a failure was retried.
    """

    spec: ClassVar[TaskSpec]
    dead_letter_visibility: int = 0
    plan: FailurePlan | None = None
    #: What becomes of the message after :meth:`kill` (an operator's order): release, dead-letter, delete.
    kill_then: str | None = None
    #: The worker's batched deletes (None: delete at once).
    deletes: DeleteBatcher | None = None
    _logged_extensions = 0

    def acknowledge(self) -> None:
        if self.deletes is None:
            super().acknowledge()
        else:
            self.deletes.add(self.message)

    def _report(self, error: BaseException) -> None:
        # A task that raises Retry asked for it: no notify, no traceback; the worker logs "retry scheduled".
        if not isinstance(error, Retry):
            super()._report(error)

    def running(self) -> bool:
        # Called at each heartbeat tick, before the extension: log the previous tick's extension here,
        # with the task's name and attempt (the lease only knows the message id).
        lease = self.lease
        if lease is not None and lease.extensions > self._logged_extensions:
            self._logged_extensions = lease.extensions
            log_event("extended", self.message_id, type(self).spec.name, receive_count(self.message), logging.DEBUG,
                      visibility=self.sqs_timeout, extensions=lease.extensions)
        return super().running()

    def backoff(self, receive_count: int) -> int:
        if isinstance(self.exception, TaskKilled):  # an operator's order: no retry plan, the order's own path
            return kill_visibility(self.kill_then)
        error = self.exception if self.exception is not None else RuntimeError("unknown failure")
        spec = type(self).spec
        self.plan = plan_failure(error, receive_count, spec.retry, spec.retry_on)
        if not self.plan.retry:
            return self.dead_letter_visibility
        if spec.retry is None and not (isinstance(error, Retry) and error.delay is not None):
            return super().backoff(receive_count)  # the handler class's own backoff, or the default
        return int(self.plan.delay or 0)


class Registry:
    """Task names to :class:`TaskSpec`. ``registry.task`` is a decorator like :func:`task`."""

    def __init__(self) -> None:
        self._tasks: dict[str, TaskSpec] = {}

    def register(self, target: Target, name: str | None = None, **options: Any) -> TaskSpec:
        """Register ``target`` under ``name`` (default: its ``__name__``); raises ConfigurationError."""
        if isinstance(target, type):
            if not issubclass(target, MessageHandler):
                raise ConfigurationError(f"@task takes a function or a MessageHandler subclass, not {target!r}")
        elif not callable(target):
            raise ConfigurationError(f"@task takes a function or a MessageHandler subclass, not {target!r}")
        name = name or getattr(target, "__name__", None)
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"task name must be a non-empty string, not {name!r}")
        unknown = set(options) - TASK_OPTIONS
        if unknown:
            raise ConfigurationError(f"unknown @task option(s): {', '.join(sorted(unknown))}")
        _check_batch(target, options)
        isolation = options.get("isolation")
        if isolation is not None and isolation not in isolation_modes():
            raise ConfigurationError(f"unknown isolation {isolation!r}; choose one of {isolation_modes()}")
        retry_on = options.get("retry_on")
        if retry_on is not None:
            options["retry_on"] = tuple(retry_on) if isinstance(retry_on, (tuple, list)) else (retry_on,)
        if options.get("retry") is not None and not isinstance(options["retry"], RetryPolicy):
            raise ConfigurationError("retry= takes fixed(...), linear(...) or exponential(...)")
        _check_schedule_and_lock(target, name, options)
        spec = TaskSpec(name, target, **options)
        self._tasks[name] = spec
        return spec

    def task(self, target: Target | None = None, *, name: str | None = None, **options: Any) -> Any:
        """``@registry.task`` or ``@registry.task(name=..., **options)``; returns the target unchanged."""
        def decorate(obj: Target) -> Target:
            self.register(obj, name, **options)
            return obj

        return decorate(target) if target is not None else decorate

    def get(self, name: str, message_id: str | None = None) -> TaskSpec:
        """The task called ``name``; raises :class:`UnknownTask`."""
        try:
            return self._tasks[name]
        except KeyError:
            raise UnknownTask(name, message_id) from None

    def names(self) -> list[str]:
        return sorted(self._tasks)

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __len__(self) -> int:
        return len(self._tasks)


#: Where plain ``@task`` registers.
default_registry = Registry()


def task(target: Target | None = None, *, name: str | None = None, **options: Any) -> Any:
    """Register a function or a MessageHandler subclass in :data:`default_registry`.

    Options override the worker's settings for this task: ``hard_timeout``,
    ``sqs_timeout``, ``alarm_timeout``, ``isolation`` ("signal" or "process"),
    ``retry`` (:func:`~sqsmaster.worker.retry.fixed`, ``linear``, ``exponential``) and
    ``retry_on`` (exception types worth a retry; others go to the dead-letter path),
    ``batch`` (up to N messages of the task to one call of the function, with the list of their kwargs;
    see :mod:`sqsmaster.worker.batches`) and ``batch_wait`` (seconds of receiving to fill one, default 1).

    ``schedule=every(minutes=10)`` or ``schedule=cron("0 3 * * *")`` makes it periodic: every worker
    with a job store sends each due slot, once across the fleet (:mod:`sqsmaster.worker.scheduler`).
    ``lock=True`` (or ``lock_key=("user_id",)``, a lock per value of those kwargs) never lets two of its
    runs overlap: a message that finds the lock held comes back ``lock_retry`` seconds later (default 5)
    as a new message, not as a failure (:mod:`sqsmaster.worker.locks`). Both need the worker's job store.
    """
    return default_registry.task(target, name=name, **options)


def load_tasks(tasks: Any) -> Registry:
    """The registry for ``tasks``: a Registry, a module, a module name (``"pkg.mod"`` / ``"pkg.mod:attr"``),
    or a list of those (their tasks together).

    A module that defines a ``Registry`` at top level (or names it after ``:``)
    gives that one; otherwise the default registry, after importing the module
    so its ``@task`` decorators ran. Raises ConfigurationError when nothing is found,
    when a module cannot be imported (whatever its import raised: a SyntaxError, a
    missing dependency...), or when two of a list's modules register one task name.
    """
    if isinstance(tasks, (list, tuple)):
        return _merged([load_tasks(one) for one in tasks], [str(one) for one in tasks])
    if isinstance(tasks, Registry):
        return tasks
    attribute = None
    if isinstance(tasks, str):
        module_name, _, attribute = tasks.partition(":")
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # SyntaxError, ImportError, an exception of the module's own code...
            raise ConfigurationError(f"cannot import the tasks module {module_name!r}: {_describe(exc)}") from exc
    else:
        module = tasks
    if attribute:
        found = getattr(module, attribute, None)
        if not isinstance(found, Registry):
            raise ConfigurationError(f"{tasks!r} is not a sqsmaster Registry")
        return found
    for value in vars(module).values():
        if isinstance(value, Registry) and value is not default_registry:
            return value
    if not len(default_registry):
        raise ConfigurationError(f"{getattr(module, '__name__', module)!r} registers no task (use @sqsmaster.task)")
    return default_registry


def _check_schedule_and_lock(target: Target, name: str, options: dict[str, Any]) -> None:
    """``schedule``, ``lock``, ``lock_key`` and ``lock_retry`` checked, and normalised in ``options``."""
    schedule = options.get("schedule")
    if schedule is not None:
        if not isinstance(schedule, Schedule):
            raise ConfigurationError(f"task {name!r}: schedule= takes every(...) or cron(...), not {schedule!r}")
        if not isinstance(target, type):
            try:
                inspect.signature(target).bind()
            except TypeError:
                raise ConfigurationError(f"task {name!r} has a schedule, so it is sent with no kwargs: it must be "
                                         "callable without arguments") from None
            except ValueError:
                pass  # no signature to check (a builtin)
    lock_key = options.get("lock_key")
    if lock_key is not None:
        keys = (lock_key,) if isinstance(lock_key, str) else lock_key
        if not isinstance(keys, (tuple, list)) or not keys or not all(isinstance(k, str) and k for k in keys):
            raise ConfigurationError(f"task {name!r}: lock_key= takes kwarg names, e.g. ('user_id',), not "
                                     f"{lock_key!r}")
        options["lock_key"] = tuple(keys)
        options["lock"] = True
        if options.get("batch") is not None:
            raise ConfigurationError(f"task {name!r}: lock_key cannot go with batch (one call takes messages of "
                                     "many keys); lock=True serialises the batch calls")
        unknown = [key for key in keys if not _takes_kwarg(target, key)]
        if unknown:
            raise ConfigurationError(f"task {name!r}: lock_key names {', '.join(unknown)}, which it takes no "
                                     "kwarg of")
    if not isinstance(options.get("lock", False), bool):
        raise ConfigurationError(f"task {name!r}: lock= takes True or False, not {options['lock']!r}")
    retry = options.get("lock_retry", DEFAULT_LOCK_RETRY)
    if isinstance(retry, bool) or not isinstance(retry, int) or not 1 <= retry <= MAX_DELAY_SECONDS:
        raise ConfigurationError(f"task {name!r}: lock_retry= takes whole seconds in [1, {MAX_DELAY_SECONDS}] "
                                 f"(SQS's longest delay), not {retry!r}")


def _takes_kwarg(target: Target, name: str) -> bool:
    """Whether a function task takes kwarg ``name`` (a handler class, or a function with ``**kwargs``, takes any)."""
    if isinstance(target, type):
        return True
    try:
        parameters = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return True
    return name in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def _describe(error: BaseException) -> str:
    """One line for an import failure: ``SyntaxError: invalid syntax (tasks.py, line 3)``."""
    if isinstance(error, SyntaxError):
        where = f"{error.filename or '?'}, line {error.lineno}"
        return f"{type(error).__name__}: {error.msg} ({where})"
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _merged(registries: list[Registry], names: list[str]) -> Registry:
    """One registry with the tasks of all; a task name two of them register differently is an error."""
    if all(registry is registries[0] for registry in registries):
        return registries[0]  # plain @task in every module: they share the default registry
    merged, origin = Registry(), dict[str, str]()
    for registry, where in zip(registries, names):
        for name in registry.names():
            spec = registry.get(name)
            if name in merged and merged.get(name) is not spec:
                raise ConfigurationError(f"task {name!r} is registered by both {origin[name]!r} and {where!r}")
            merged._tasks[name] = spec
            origin[name] = where
    return merged
