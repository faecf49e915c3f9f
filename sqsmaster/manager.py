"""``TaskManager``: the producer and consumer entry point, sqstaskmaster's shape."""

from __future__ import annotations

import logging
import uuid
from typing import Any, Callable, Iterable, Iterator

from .backends import Message, SendEntry, check_url, open_queue
from .batching import DEFAULT_IN_FLIGHT, check_in_flight, send_entries
from .bulk import progress_bar, submit_parallel, total_of
from .consumer import task_generator
from .delays import due_attribute, plan_delay
from .eager import EagerQueue, eager_enabled
from .errors import ConfigurationError
from .limits import MAX_MESSAGE_SIZE
from .payloads import PayloadStore
from .producer import TaskCall, as_task, attributes_size, build_entry, plain_entry, sender_attributes

logger = logging.getLogger(__name__)


class TaskManager:
    """Submit tasks to a queue and receive them.

    :param sqs_url: the queue: ``https://sqs.REGION.amazonaws.com/ACCOUNT/NAME`` (or any
        SQS-compatible endpoint's queue URL), ``mem://NAME``, or what a registered scheme accepts
    :param notify: ``notify(exception, context=None)``, called for messages that cannot run
    :param queue_constructor: any callable ``url -> queue`` (e.g. :class:`~sqsmaster.LocalQueue`)
    :param sender_name: the ``service_name`` message attribute
    :param client: a boto3 SQS client to use instead of one made from the URL and environment
    :param payload_bucket: ``s3://bucket/prefix``: bodies over ``payload_threshold`` bytes go to S3
        and the message carries a pointer (see :mod:`sqsmaster.payloads`)
    :param payload_threshold: message size above which bodies go to S3 (default: SQS's 1 MiB)
    :param payload_client: a boto3 S3 client (default: one for the queue's endpoint)
    :param create: the first send creates a ``sqlite://`` or ``fq://`` queue that does not exist, with
        the URL's options (False: it raises QueueDoesNotExist instead). Receiving never creates one:
        ``task_generator`` on a queue that does not exist raises QueueDoesNotExist.
    :param eager: run each submitted task inline instead of sending it (see :mod:`sqsmaster.eager`);
        None (the default) reads ``SQSMASTER_EAGER``. No queue is opened then.
    :param tasks: eager mode's tasks: a Registry, a module or its name (default: the ``@task`` registry)
    """

    def __init__(self, sqs_url: str, notify: Callable[..., None] | None = None,
                 queue_constructor: Callable[[str], Any] | None = None, sender_name: str | None = None,
                 *, client: Any = None, payload_bucket: str | None = None,
                 payload_threshold: int = MAX_MESSAGE_SIZE, payload_client: Any = None, create: bool = True,
                 eager: bool | None = None, tasks: Any = None) -> None:
        self.url = sqs_url
        self.sender_name = sender_name
        self.eager = eager_enabled(eager)
        self._attributes = sender_attributes(sender_name, sqs_url)
        self.payloads = None if payload_bucket is None else PayloadStore(
            payload_bucket, client=payload_client, threshold=payload_threshold, queue_url=sqs_url)
        if self.eager:
            check_url(sqs_url)
            self.queue: Any = EagerQueue(sqs_url, tasks, self.payloads)
        else:
            self.queue = open_queue(sqs_url, client=client, queue_constructor=queue_constructor, create=create)
        self._notify = notify
        self.fifo = bool(getattr(self.queue, "fifo", False))  # a queue_constructor's object may not say
        self._content_deduplication: bool | None = None

    def submit(self, task: str | TaskCall, /, **kwargs: Any) -> dict[str, Any]:
        """Send one task. Returns the send response (``{"MessageId": ...}``).

        ``submit("resize", path=p)`` sends the task ``resize`` with those kwargs, whatever
        their names. For per-message options pass a :class:`~sqsmaster.TaskCall` and no kwargs:
        ``submit(TaskCall("resize", {"path": p}, countdown=3600))``.

        Raises EncodeError (a kwarg JSON cannot hold), MessageTooLarge (over 1 MiB and no
        ``payload_bucket``), LimitExceeded; nothing is sent then. In eager mode the task runs
        here and its exception propagates; the response also holds its return value (``"Result"``).
        """
        if isinstance(task, TaskCall):
            if kwargs:
                raise ConfigurationError("submit(TaskCall(...)) takes no kwargs: put them in TaskCall(name, kwargs)")
            item = task
        else:
            item = TaskCall(task, kwargs)
        response = self.queue.send(self.entry(item))
        logger.debug("message %s: submitted task %s", response.get("MessageId"), item.name)
        return response

    def submit_many(self, tasks: Iterable[TaskCall | tuple[str, dict[str, Any]]], *, total: int | None = None,
                    progress: bool = False, parallel: int | None = None,
                    max_in_flight: int = DEFAULT_IN_FLIGHT) -> int:
        """Send many tasks with SendMessageBatch; return how many were sent.

        ``tasks`` is any iterable (a generator included) of :class:`~sqsmaster.TaskCall` or
        ``(name, kwargs)`` pairs, read lazily: memory stays flat however many there are.
        Batches hold at most 10 entries and 1 MiB. How many requests run at once is a
        window that times every request (:mod:`sqsmaster.inflight`): it climbs while more
        send faster (a distant SQS) and stays low where they only wait (a local server),
        never past ``max_in_flight`` nor the client's connection pool (FIFO queues: each
        group in order through one of them). ``progress=True``
        shows a tqdm bar (``total=`` or ``len(tasks)``; ``pip install 'sqsmaster[progress]'``).
        ``parallel=N`` splits a sliceable ``tasks`` (``len()`` and ``[a:b]``) across N processes.

        Raises SubmitFailed naming what could not be sent (entries SQS refused after
        retries, or the queue error that stopped the run) and how many were sent. A task
        that cannot be encoded raises its error (EncodeError, MessageTooLarge...) after
        the tasks before it were sent and before any after it. In eager mode each task runs
        here in turn (``parallel`` and ``progress`` are ignored) and the first exception propagates.
        """
        check_in_flight(max_in_flight)
        if self.eager:
            return self._run_all(tasks)
        bar = progress_bar(total_of(tasks, total)) if progress else None
        try:
            if parallel is not None and parallel > 1:
                settings = {"sqs_url": self.url, "sender_name": self.sender_name,
                            "payload_bucket": None if self.payloads is None else self.payloads.url,
                            "payload_threshold": MAX_MESSAGE_SIZE if self.payloads is None
                            else self.payloads.threshold}
                return submit_parallel(TaskManager, settings, tasks, parallel, bar, max_in_flight)
            entries = self._entries(tasks)
            sent = send_entries(self.queue, entries, max_in_flight=max_in_flight, fifo=self.fifo,
                                on_sent=None if bar is None else bar.update)
        finally:
            if bar is not None:
                bar.close()
        logger.info("submitted %d task(s) to %s", sent, self.url)
        return sent

    def _run_all(self, tasks: Iterable[TaskCall | tuple[str, dict[str, Any]]]) -> int:
        """Eager mode's ``submit_many``: each task runs here, in order; the first exception stops the run."""
        ran = 0
        for entry in self._entries(tasks):
            self.queue.send(entry)
            ran += 1
        return ran

    def _entries(self, tasks: Iterable[TaskCall | tuple[str, dict[str, Any]]]) -> Iterator[SendEntry]:
        """The checked entries of ``tasks``, read lazily; entry ids are the indexes in ``tasks``."""
        attributes, size_of_attributes = self._attributes, attributes_size(self._attributes)
        plain = not self.fifo and self.payloads is None
        for index, item in enumerate(tasks):
            # A (name, kwargs) pair carries no option: on a standard queue without S3 offload, nothing but the
            # body needs checking, so it skips the TaskCall and the option planning (this runs once per message).
            if plain and type(item) is tuple and len(item) == 2 and type(item[1]) is dict:
                yield plain_entry(item[0], item[1], attributes, size_of_attributes, str(index))
            else:
                yield self.entry(as_task(item, index), str(index))

    def entry(self, task: TaskCall, entry_id: str = "0") -> SendEntry:
        """The checked message for ``task``: delays, FIFO group and deduplication, S3 offload applied."""
        delay, due = plan_delay(task.delay_seconds, task.eta, task.countdown, native=not self.fifo)
        attributes = self._attributes if due is None else {**self._attributes, **due_attribute(due)}
        group_id, deduplication_id = task.group_id, task.deduplication_id
        if self.fifo:
            group_id = group_id or task.name
            if deduplication_id is None and not self._has_content_deduplication():
                # Neither an id nor content-based deduplication: SQS would refuse the send. A fresh id
                # makes every submit distinct, and a retried send of the same entry is still dropped.
                deduplication_id = uuid.uuid4().hex
        return build_entry(task.name, task.kwargs, attributes, delay_seconds=delay, group_id=group_id,
                           deduplication_id=deduplication_id, entry_id=entry_id, payloads=self.payloads)

    def _has_content_deduplication(self) -> bool:
        if self._content_deduplication is None:
            value = self.queue.get_attributes().get("ContentBasedDeduplication", "false")
            self._content_deduplication = str(value).lower() == "true"
        return self._content_deduplication

    def task_generator(self, wait_time: float = 20, sqs_timeout: float = 20, max_messages: int = 1,
                       *, until_empty: bool = False) -> Iterator[tuple[str, dict[str, Any], Message]]:
        """Yield ``(task, kwargs, message)``; see :func:`sqsmaster.consumer.task_generator`.

        Runs forever unless ``until_empty``. Raises LimitExceeded for a ``wait_time``
        over 20 s or an ``sqs_timeout`` over 12 hours, before any receive.
        """
        return task_generator(self.queue, wait_time=wait_time, sqs_timeout=sqs_timeout,
                              max_messages=max_messages, notify=self.notify, until_empty=until_empty,
                              payloads=self.payloads)

    def attributes(self) -> dict[str, str]:
        """The queue's attributes (``ApproximateNumberOfMessages`` and the rest, as strings)."""
        return self.queue.get_attributes()

    def purge(self) -> None:
        """Delete every message in the queue."""
        self.queue.purge()

    def notify(self, exception: BaseException, context: dict[str, Any] | None = None) -> None:
        """Pass a failure to the ``notify`` callback given to the constructor, if any."""
        if self._notify is not None:
            self._notify(exception, context=context)

    def close(self) -> None:
        self.queue.close()

    def __enter__(self) -> "TaskManager":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
