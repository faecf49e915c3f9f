"""An idle worker's long poll: on a thread, so a stop never waits for it, with a short visibility, so a poll
nobody listens to any more strands nothing for long.

A ReceiveMessage cannot be cancelled once sent: SQS may hand it a message at any
moment of its wait, even after the worker stopped listening or died, and that
message then stays hidden for the visibility the receive asked for. So an idle
worker's long poll asks for :data:`IDLE_VISIBILITY` seconds, and runs on a
thread of its own while the worker's main thread keeps looking at its stop flag:

* the poll returns messages and the worker still listens: the thread extends them
  to the worker's visibility at once, in one ChangeMessageVisibilityBatch, before it
  hands them over (what cannot be extended is not handed over: it comes back within
  IDLE_VISIBILITY seconds, and its task never starts on a lease shorter than promised);
* the worker stops while the poll waits: it stops listening at once (and exits). If
  the process still lives when the poll returns, the thread releases what it got
  (visibility 0); if it does not (it exited, or was SIGKILLed at any instant of the
  wait), those messages come back IDLE_VISIBILITY seconds after the receive, not
  after the worker's visibility timeout.
* the worker stops while the thread extends what it got: the worker waits for that
  call (at most :data:`EXTEND_TIMEOUT`) and takes the messages, which its stop then
  releases. Not waiting would let the process exit with the extension done at the
  server and nobody left to release: hidden for the whole visibility timeout.

What this costs: one visibility call per wake-up (per poll that returns messages, for
all of them), none per task of a busy worker, whose receives are short and hide
their messages for the full visibility (see :class:`sqsmaster.worker.receiving.Receiver`).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from ..backends import Message, QueueBackend
from ..lease import NO_ANSWER, RELEASE_TIMEOUT, change_visibilities
from .signals import block_stop_signals

logger = logging.getLogger("sqsmaster.worker")

#: Visibility an idle long poll asks for (s): the longest a message it gets can be stranded by a worker that
#: stopped listening (a stop, a SIGKILL). It must outlast the extension that follows the receive on a loaded
#: machine (a round trip and a thread switch), and it bounds how soon such a message is seen again.
IDLE_VISIBILITY = 5
#: Bound on the extension call that follows an idle receive (s): it must land well inside IDLE_VISIBILITY.
EXTEND_TIMEOUT = 2.0
#: How often the main thread looks at its stop flag while a long poll waits (s).
STOP_TICK = 0.05


class LongPoll:
    """One long poll of ``queue`` (made through ``receiving``, a client whose read timeout outlasts the wait)
    on a daemon thread. :meth:`start`, then :meth:`wait`.

    :param count: most messages to receive (1-10)
    :param wait_time: the poll's wait (s, at most 20)
    :param visibility_timeout: how long to hide what it gets once it is handed over (s)
    """

    def __init__(self, queue: QueueBackend, receiving: QueueBackend, count: int, wait_time: int,
                 visibility_timeout: int) -> None:
        self.queue = queue
        self._receiving = receiving
        self.count = count
        self.wait_time = wait_time
        self.visibility_timeout = visibility_timeout
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._finished = False
        self._extending = False  # the receive returned messages and the thread is extending them
        self._abandoned = False
        self._messages: list[Message] = []
        self._error: Exception | None = None
        self._thread = threading.Thread(target=self._run, name="sqsmaster-long-poll", daemon=True)

    def start(self) -> "LongPoll":
        self._thread.start()
        return self

    def wait(self, should_stop: Callable[[], bool]) -> list[Message]:
        """The messages the poll got, each hidden for ``visibility_timeout`` from about now; [] when it got none.

        Returns [] as soon as ``should_stop()`` says so while the poll still waits (looked at every
        :data:`STOP_TICK` s): the poll is then abandoned, and the thread releases whatever it gets.
        Once the poll got messages it is no longer abandoned: this waits for their extension (at most
        :data:`EXTEND_TIMEOUT`) and returns them, for the caller to release or run.
        Raises what the receive raised (QueueError, QueueDoesNotExist).
        """
        while not self._done.wait(STOP_TICK):
            if should_stop() and self._abandon():
                return []
        if self._error is not None:
            raise self._error
        return self._messages

    def _abandon(self) -> bool:
        """Stop listening; False if the poll got messages already (the caller waits and takes them)."""
        with self._lock:
            if self._finished or self._extending:
                return False
            self._abandoned = True
            return True

    def _run(self) -> None:
        block_stop_signals()
        messages: list[Message] = []
        error: Exception | None = None
        try:
            messages = self._receiving.receive(self.count, self.wait_time, IDLE_VISIBILITY)
            for message in messages:
                message.queue = self.queue  # deletes and releases go through the worker's own handle
            with self._lock:  # from here on, a stop waits for the extension (see the module's docstring)
                self._extending = bool(messages) and not self._abandoned
            if self._extending:  # an abandoned poll's messages are released below instead
                messages = self._extend(messages)
        except Exception as exc:  # the main thread raises it (or, abandoned, nobody needs it)
            error = exc
        with self._lock:
            self._finished = True
            abandoned = self._abandoned
            if not abandoned:
                self._messages, self._error = messages, error
        self._done.set()
        if abandoned and messages:
            self._release(messages)

    def _extend(self, messages: list[Message]) -> list[Message]:
        """Hide ``messages`` for the worker's visibility; returns those it could (the others come back soon)."""
        sent_at = time.monotonic()
        failed = change_visibilities([(message, self.visibility_timeout) for message in messages], EXTEND_TIMEOUT)
        kept = []
        for message in messages:
            if message in failed:
                logger.warning("message %s: extending its visibility after an idle receive failed (%s); not "
                               "started: it comes back within %ds", message.message_id, failed[message][1],
                               IDLE_VISIBILITY)
            else:
                message.leased(self.visibility_timeout, at=sent_at)
                kept.append(message)
        # A call that got no answer may have been done at the server (hidden for the whole visibility):
        # release those, so they come back now, not after the visibility timeout. (An error answer: not done.)
        unknown = [message for message in messages if message in failed and failed[message][0] == NO_ANSWER]
        if unknown:
            self._release(unknown, "its extension failed")
        return kept

    def _release(self, messages: list[Message], why: str = "received after the worker stopped listening") -> None:
        failed = change_visibilities([(message, 0) for message in messages], RELEASE_TIMEOUT)
        for message in messages:
            if message in failed:
                logger.warning("message %s: %s, and not released (%s); it comes back when the visibility the "
                               "server last applied expires (%ds, or the worker's)", message.message_id, why,
                               failed[message][1], IDLE_VISIBILITY)
            else:
                logger.info("released message %s (%s): visible again now", message.message_id, why)
