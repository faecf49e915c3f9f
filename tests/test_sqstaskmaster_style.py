"""A handler test suite as a sqstaskmaster user writes it, run against sqsmaster (issue 11).

Written in the style of sqstaskmaster's own tests (unittest, ``Mock()`` messages,
``LocalMessage``, ``LocalQueue`` integration) for a handler shaped as sqstaskmaster's
README shapes one. The only edits from the sqstaskmaster version are the imports (the
package name) and the lines marked ``# was:``, each one a difference the README's
"Migrating from sqstaskmaster" section lists; lines marked ``# new`` check what
sqstaskmaster got wrong. With the imports and the ``# was:`` lines put back, and the
``# new`` lines dropped, the suite passes on sqstaskmaster 0.0.11 too.
"""

import logging
import time
import unittest
from unittest.mock import MagicMock, Mock, patch

from botocore.exceptions import ClientError

from sqsmaster import HardTimeoutExceeded  # new: the hard timeout's own class (was: TimeoutError)
from sqsmaster.local import LocalMessage, LocalQueue  # was: from sqstaskmaster.local import ...
from sqsmaster.message_handler import MessageHandler  # was: from sqstaskmaster.message_handler import ...
from sqsmaster.task_manager import TaskManager  # was: from sqstaskmaster.task_manager import ...

logger = logging.getLogger(__name__)

REPORT_FAILED = ValueError("the report is broken")


class Interrupted(BaseException):
    """A BaseException that is not an Exception, as KeyboardInterrupt or SystemExit are."""


class ReportHandler(MessageHandler):
    def __init__(self, message, sqs_timeout, alarm_timeout, hard_timeout=4 * 60 * 60, **kwargs):
        super().__init__(message, sqs_timeout, alarm_timeout, hard_timeout)
        self.kwargs = kwargs
        self.written = []

    def running(self):
        return True

    def run(self):
        if self.kwargs.get("broken"):
            raise REPORT_FAILED
        if self.kwargs.get("busy"):
            while True:
                pass
        self.written.append(self.kwargs["day"])

    def notify(self, exception, context=None):
        pass


@patch.object(ReportHandler, "notify")
class TestReportHandler(unittest.TestCase):
    def test_success_deletes_the_message(self, notify):
        mock_message = Mock()
        with ReportHandler(mock_message, sqs_timeout=30, alarm_timeout=25, hard_timeout=300,
                           day="2019-01-01") as handler:
            handler.run()

        self.assertEqual(handler.written, ["2019-01-01"])
        mock_message.delete.assert_called_once_with()
        notify.assert_not_called()

    def test_success_with_a_magic_mock_message(self, notify):
        mock_message = MagicMock()
        with ReportHandler(mock_message, sqs_timeout=30, alarm_timeout=25, day="2019-01-01") as handler:
            handler.run()

        mock_message.delete.assert_called_once_with()

    def test_failure_notifies_and_does_not_delete(self, notify):
        mock_message = Mock()
        mock_message.attributes.keys.return_value = []
        with ReportHandler(mock_message, sqs_timeout=30, alarm_timeout=25, hard_timeout=300, broken=True) as handler:
            handler.run()

        mock_message.delete.assert_not_called()
        notify.assert_called_once_with(
            REPORT_FAILED, context={"body": mock_message.body, **mock_message.attributes}
        )

    def test_delete_fails(self, notify):
        mock_message = Mock()
        mock_message.attributes.keys.return_value = []
        ce = ClientError({}, "operation")
        mock_message.delete.side_effect = ce
        with ReportHandler(mock_message, sqs_timeout=30, alarm_timeout=25, day="2019-01-01") as handler:
            handler.run()

        notify.assert_called_once_with(ce, context={"body": mock_message.body, **mock_message.attributes})

    def test_base_exception_propagates(self, notify):
        mock_message = Mock()
        mock_message.attributes.keys.return_value = []
        error = Interrupted("FooBar")
        with self.assertRaises(Interrupted):
            with ReportHandler(mock_message, sqs_timeout=3, alarm_timeout=1, hard_timeout=1):
                raise error

        mock_message.delete.assert_not_called()
        notify.assert_called_once_with(error, context={"body": mock_message.body, **mock_message.attributes})

    def test_busy_loop_timeout(self, notify):
        mock_message = Mock()
        mock_message.attributes.keys.return_value = []
        started = time.monotonic()

        with ReportHandler(mock_message, sqs_timeout=3, alarm_timeout=1, hard_timeout=1, busy=True) as instance:
            with self.assertRaises(HardTimeoutExceeded):  # was: TimeoutError (HardTimeoutExceeded is a BaseException)
                instance.run()

        mock_message.delete.assert_not_called()  # new: sqstaskmaster deleted it (assertRaises swallowed the timeout)
        notify.assert_called_once()
        self.assertEqual(instance.outcome, "timed out")  # new
        self.assertLess(time.monotonic() - started, 30)  # stopped by the hard timeout, not by the test's timeout

    def test_constructor_checks_the_timeouts(self, notify):
        mock_message = Mock()
        with self.assertRaises(ValueError):
            ReportHandler(mock_message, sqs_timeout=13, alarm_timeout=12, hard_timeout=17)
        with self.assertRaises(ValueError):
            ReportHandler(mock_message, sqs_timeout=0, alarm_timeout=12, hard_timeout=17)
        with self.assertRaises(ValueError):
            ReportHandler(mock_message, sqs_timeout=13, alarm_timeout=0, hard_timeout=17)
        with self.assertRaises(ValueError):
            ReportHandler(mock_message, sqs_timeout=13, alarm_timeout=12, hard_timeout=0)


class TestLocalMessage(unittest.TestCase):
    def setUp(self):
        self.instance = LocalMessage("body", {"some": "attr"}, {"some": "msg_attr"})

    def test_init_properties(self):
        self.assertEqual(self.instance.body, "body")
        self.assertDictEqual(self.instance.attributes, {"some": "attr"})
        self.assertDictEqual(self.instance.message_attributes, {"some": "msg_attr"})

    def test_handler_runs_on_a_local_message(self):
        message = LocalMessage('{"task": "report", "kwargs": {"day": "2019-01-01"}}', {}, {})
        with ReportHandler(message, sqs_timeout=30, alarm_timeout=25, day="2019-01-01") as handler:
            handler.run()
        self.assertEqual(handler.written, ["2019-01-01"])


TASK_NAME, TASK_STOP = "special_task", "STOP"


def example_producer(url, messages):
    tm = TaskManager(url, queue_constructor=LocalQueue)
    for task, kwargs in messages:
        tm.submit(task, **kwargs)
    logger.info("Submitted messages")


def example_consumer(url, notify=None):
    received = []
    tm = TaskManager(url, queue_constructor=LocalQueue, notify=notify)
    for task, kwargs, message in tm.task_generator(sqs_timeout=30, wait_time=1):
        if task == TASK_NAME:
            with ReportHandler(message, sqs_timeout=5, alarm_timeout=1, hard_timeout=1, **kwargs) as handler:
                handler.run()
            received.extend(handler.written)
        elif task == TASK_STOP:
            break
    return received


class TestLocalIntegration(unittest.TestCase):
    def setUp(self):
        LocalQueue.local_queues.clear()

    def tearDown(self):
        LocalQueue.local_queues.clear()

    def test_producer_consumer(self):
        messages = [
            (TASK_NAME, {"day": "2019-01-01"}),
            (TASK_NAME, {"day": "2019-01-02"}),
            (TASK_STOP, {"more": "nonesense"}),
        ]
        example_producer("a_particular_queue", messages)

        self.assertListEqual(example_consumer("a_particular_queue"), ["2019-01-01", "2019-01-02"])

    def test_decode_error_is_notified_and_the_loop_goes_on(self):
        LocalQueue("a_particular_queue").send_message(MessageBody='{"task": "task_name", "kwargs": {"foo": "b')
        example_producer("a_particular_queue", [(TASK_NAME, {"day": "2019-01-03"}), (TASK_STOP, {})])
        mock_notify = Mock()

        self.assertListEqual(example_consumer("a_particular_queue", mock_notify), ["2019-01-03"])

        mock_notify.assert_called_once()
        exception = mock_notify.call_args[0][0]
        self.assertIsInstance(exception, ValueError)  # was: InstanceOf(JSONDecodeError), now its __cause__
        self.assertEqual(mock_notify.call_args[1]["context"]["body"], '{"task": "task_name", "kwargs": {"foo": "b')


if __name__ == "__main__":
    unittest.main()
