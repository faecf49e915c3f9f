"""Outcomes and actions are enums now; what users read (the job log, the log lines) did not change by a byte."""

from __future__ import annotations

import json
import logging

import pytest

from sqsmaster.outcomes import JOB_OUTCOMES, Action, Outcome
from sqsmaster.worker.jobs import JobLog, JobRecord
from sqsmaster.worker.worklog import JsonFormatter, log_event

WORDS = [*Outcome, *Action]


def a_record(outcome: str) -> JobRecord:
    return JobRecord(message_id="m-1", task="resize", attempt=2, host="h", pid=7, submitted=1.5, started=2.0,
                     ended=3.25, runtime=1.25, outcome=outcome, exception="ValueError: x", heartbeats=1)


@pytest.mark.parametrize("word", WORDS, ids=lambda word: f"{type(word).__name__}.{word.name}")
def test_each_word_prints_compares_and_serialises_as_its_string(word):
    # Then the member is its string wherever code or a user meets it
    assert word == word.value and str(word) == word.value and f"{word}" == word.value
    assert "%s" % word == word.value  # noqa: UP031 (logging formats its arguments with %s)
    assert f"{word:<15}|" == f"{word.value:<15}|"
    assert json.dumps({word: word}) == json.dumps({word.value: word.value})


@pytest.mark.parametrize("outcome", JOB_OUTCOMES, ids=lambda outcome: outcome.name)
def test_a_job_log_line_is_byte_for_byte_the_one_a_bare_string_wrote(tmp_path, outcome):
    # Given the same record, once with the enum and once with the bare string the worker used to write
    JobLog(tmp_path / "enum.log").append(a_record(outcome))
    JobLog(tmp_path / "string.log").append(a_record(outcome.value))
    # Then the files are identical, and the record read back compares equal to the enum
    assert (tmp_path / "enum.log").read_bytes() == (tmp_path / "string.log").read_bytes()
    assert [r.outcome for r in JobLog(tmp_path / "enum.log").read()] == [outcome]


@pytest.mark.parametrize("event", [Outcome.DEAD_LETTERED, Outcome.TIMED_OUT, Action.KEPT],
                         ids=lambda event: event.name)
def test_a_log_line_as_text_and_as_json_is_the_one_a_bare_string_gave(caplog, event):
    # When the worker logs an event named by the enum, and by its bare string
    with caplog.at_level(logging.INFO, logger="sqsmaster.worker"):
        log_event(event, "m-1", "resize", 3, logging.WARNING, runtime=1.5, reason="why")
        log_event(event.value, "m-1", "resize", 3, logging.WARNING, runtime=1.5, reason="why")
    by_enum, by_string = caplog.records[-2:]
    by_enum.created = by_string.created
    by_enum.msecs = by_string.msecs
    # Then the text and the JSON lines are the same bytes
    assert by_enum.getMessage() == by_string.getMessage() == f"{event.value} message m-1 task=resize attempt=3 " \
                                                               "runtime=1.50s reason=why"
    assert JsonFormatter().format(by_enum) == JsonFormatter().format(by_string)
