"""What the dashboard's buttons do: kill, requeue a failure group, redrive or delete dead letters.

No web framework here. Every action is recorded in the store's audit trail with who gave
it and how many messages it touched (:meth:`~sqsmaster.store.JobStore.record_action`);
the read-only check and the CSRF guard live in :mod:`.app`, before any of this runs.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from ...backends import Message, QueueBackend, open_queue
from ...errors import ConfigurationError
from ...limits import MAX_BATCH_ENTRIES
from ...manager import TaskManager
from ...producer import copy_entry
from ...store import ActionRow, AttemptRow, JobStore
from .. import control
from ..admin import QueueStatus, queue_status
from .queries import DLQ_DELETED, REDRIVEN, dead_letters, failure_groups, kwargs_of, mark

logger = logging.getLogger(__name__)

#: How long a dead letter that is not one we look for stays hidden while we search the DLQ (s); all are
#: handed back (visibility 0) as soon as the search ends.
SEARCH_VISIBILITY = 30
#: The most DLQ messages one redrive or delete receives while looking for the ones it was asked for.
SEARCH_LIMIT = 5000
#: How long a requeue marks a message as requeued (s): a second click within it does not send it twice.
REQUEUE_MARK_TTL = 7 * 24 * 3600.0


@dataclass
class Result:
    """What an action did: ``done`` messages touched; ``skipped`` not touched, with the reason per message id."""

    what: str
    done: int = 0
    skipped: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"what": self.what, "done": self.done, "skipped": self.skipped,
                "message": f"{self.what}: {self.done} done" + (f", {len(self.skipped)} not: " + "; ".join(
                    f"{mid}: {why}" for mid, why in list(self.skipped.items())[:5]) if self.skipped else "")}


def kill(store: JobStore, message_ids: list[str], then: str, who: str, now: float) -> Result:
    """Order each running task stopped at its next heartbeat tick (see :func:`sqsmaster.ops.control.kill`)."""
    if not message_ids:
        raise ConfigurationError("no message id to kill")
    for message_id in message_ids:
        control.kill(store, message_id, then=then, who=who, now=now)
    return Result("kill", len(message_ids))


def requeue_group(store: JobStore, task: str, exception_type: str, who: str, now: float,
                  submit: Callable[[str, str, dict[str, Any]], Any] | None = None) -> Result:
    """Send again the task + kwargs of each message of a failure group that left its queue.

    Messages whose stored kwargs were cut to the store's 4 KiB bound are refused (sending the cut
    text would run the task with other arguments), and so is a message requeued before (a claim in
    the store, so two clicks or two dashboards send it once)."""
    groups, _ = failure_groups(store, now)
    matching = [g for g in groups if g.task == task and g.exception_type == exception_type]
    if not matching:
        raise ConfigurationError(f"no failure group {task} x {exception_type}")
    group = matching[0]
    result = Result("requeue")
    for row in group.cut:
        result.skipped[row.message_id] = ("its kwargs were cut to the job store's 4 KiB bound (or are not JSON): "
                                          "resubmit it from its source")
    sender = _Sender()
    try:
        _requeue(store, group.requeueable, submit or sender, f"{who} {uuid.uuid4().hex}", now, result)
    finally:
        sender.close()
    store.record_action(ActionRow(now, who, "requeue", f"{task} x {exception_type}", result.done,
                                  _detail(result)))
    logger.info("%s requeued %d message(s) of %s x %s", who, result.done, task, exception_type)
    return result


def _requeue(store: JobStore, rows: list[AttemptRow], send: Callable[[str, str, dict[str, Any]], Any], owner: str,
             now: float, result: Result) -> None:
    """Claim and send each row's task; ``owner`` is this click: a second click, even by the same user, loses."""
    for row in rows:
        if not store.claim(f"requeued:{row.message_id}", owner, now, REQUEUE_MARK_TTL):
            result.skipped[row.message_id] = "requeued before"
            continue
        kwargs = kwargs_of(row)
        if kwargs is None or not row.task:  # failure_groups lists only rows with both; a row rewritten since
            store.release(f"requeued:{row.message_id}", owner)
            result.skipped[row.message_id] = "no task name or kwargs to send"
            continue
        try:
            send(row.queue, row.task, kwargs)
        except Exception as exc:
            store.release(f"requeued:{row.message_id}", owner)
            result.skipped[row.message_id] = f"send failed: {exc}"
            continue
        result.done += 1


class _Sender:
    """Sends tasks through one TaskManager per queue (one client, not one per message), closed at the end."""

    def __init__(self) -> None:
        self.managers: dict[str, TaskManager] = {}

    def __call__(self, queue: str, task: str, kwargs: dict[str, Any]) -> None:
        if queue not in self.managers:
            self.managers[queue] = TaskManager(queue, sender_name="sqsmaster-dashboard", create=False)
        response = self.managers[queue].submit(task, **kwargs)
        logger.info("message %s: sent task %s again to %s", response.get("MessageId"), task, queue)

    def close(self) -> None:
        for manager in self.managers.values():
            manager.close()


def _detail(result: Result) -> str | None:
    if not result.skipped:
        return None
    text = "; ".join(f"{mid}: {why}" for mid, why in result.skipped.items())
    return text if len(text) <= 1000 else text[:990] + " [...]"


def dead_letter_rows(store: JobStore, message_ids: list[str] | None, now: float) -> list[AttemptRow]:
    """The dead letters the store knows of, all (``message_ids`` None) or those named."""
    rows, _ = dead_letters(store, now)
    if message_ids is None:
        return rows
    wanted = set(message_ids)
    return [row for row in rows if row.message_id in wanted]


def redrive(store: JobStore, message_ids: list[str] | None, who: str, now: float, send_back: bool = True,
            status: Callable[[str], QueueStatus] = queue_status) -> Result:
    """Send dead letters back to their source queue (``send_back``), then delete them from the DLQ; with
    ``send_back`` False only delete them. Each DLQ is searched by message id; a message not found there
    (moved out by other means, or copied by ``--dlq`` under a new id) is reported, not guessed at."""
    rows = dead_letter_rows(store, message_ids, now)
    what = "redrive" if send_back else "delete dead letter"
    result = Result(what)
    for message_id in set(message_ids or []) - {row.message_id for row in rows}:
        result.skipped[message_id] = "not a dead letter the job store knows of"
    by_queue: dict[str, list[AttemptRow]] = {}
    for row in rows:
        by_queue.setdefault(row.queue, []).append(row)
    for queue_url, queue_rows in by_queue.items():
        # Asked now, and waited for: the views' cached depths may be old, or not in yet on a slow endpoint.
        try:
            dlq_url = status(queue_url).dead_letter_url
        except Exception as exc:
            dlq_url, why = None, f"cannot read the redrive policy of {queue_url}: {exc}"
        else:
            why = f"{queue_url} has no redrive policy naming its dead-letter queue"
        if not dlq_url:
            for row in queue_rows:
                result.skipped[row.message_id] = why
            continue
        moved = _move(dlq_url, queue_url if send_back else None, {row.message_id: row for row in queue_rows}, result)
        for row in moved:
            mark(store, row, REDRIVEN if send_back else DLQ_DELETED)
    store.record_action(ActionRow(now, who, what, ", ".join(by_queue) or "-", result.done, _detail(result)))
    return result


def _move(dlq_url: str, target_url: str | None, wanted: dict[str, AttemptRow], result: Result) -> list[AttemptRow]:
    """Receive from the DLQ until every wanted message is found (or it holds no more): send each found one to
    ``target_url`` (if any) and delete it; hand every other message back at once. Returns the rows moved."""
    dlq = open_queue(dlq_url, create=False)
    target = open_queue(target_url, create=False) if target_url else None
    moved: list[AttemptRow] = []
    others: list[str] = []
    try:
        received = 0
        while len(moved) < len(wanted) and received < SEARCH_LIMIT:
            messages = dlq.receive(MAX_BATCH_ENTRIES, 1, SEARCH_VISIBILITY)
            if not messages:
                break
            received += len(messages)
            for message in messages:
                row = wanted.get(message.message_id)
                if row is None or row in moved:
                    others.append(message.receipt_handle)
                elif _send_and_delete(dlq, target, message, result):
                    moved.append(row)
    finally:
        for start in range(0, len(others), MAX_BATCH_ENTRIES):
            dlq.change_visibility_batch([(handle, 0) for handle in others[start:start + MAX_BATCH_ENTRIES]])
        dlq.close()
        if target is not None:
            target.close()
    for message_id in set(wanted) - {row.message_id for row in moved}:
        result.skipped.setdefault(message_id, f"not found in {dlq_url}")
    return moved


def _send_and_delete(dlq: QueueBackend, target: QueueBackend | None, message: Message, result: Result) -> bool:
    """Send first, then delete: a failure in between leaves a duplicate, never a loss."""
    try:
        if target is not None:
            target.send(copy_entry(message))
        dlq.delete(message.receipt_handle, message.message_id)
    except Exception as exc:
        logger.error("message %s: moving it out of %s failed: %s", message.message_id, dlq.url, exc)
        result.skipped[message.message_id] = f"failed: {exc}"
        return False
    logger.info("message %s: %s %s", message.message_id, "redriven from" if target else "deleted from", dlq.url)
    result.done += 1
    return True
