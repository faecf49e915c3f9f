"""Schedules of periodic tasks: grids anchored in time, catch-up, the EventBridge export, and the two commands."""

from __future__ import annotations

import datetime
import json
import sys
import textwrap

import pytest

from sqsmaster import ConfigurationError, Registry, cron, every
from sqsmaster.cli import main
from sqsmaster.store import FiredRow, open_store
from sqsmaster.worker.schedules import FIRST_SLOT_WINDOW, MAX_CATCH_UP, due_slots, slot_iso

UTC = datetime.timezone.utc


def at(text: str) -> float:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_every_sits_on_a_grid_anchored_at_the_epoch_whatever_the_time_asked():
    ten = every(minutes=10)
    for asked in ("2026-12-02T16:30:00", "2026-12-02T16:34:59.9", "2026-12-02T16:39:59"):
        assert slot_iso(ten.previous(at(asked))) == "2026-12-02T16:30:00Z"
        assert slot_iso(ten.following(at(asked))) == "2026-12-02T16:40:00Z"
    # weekly slots fall on the epoch's weekday (a Thursday) unless start names another
    assert datetime.datetime.fromtimestamp(every(weeks=1).previous(at("2026-12-02T00:00:00")), UTC).weekday() == 3
    sundays = every(weeks=1, start=datetime.datetime(2000, 1, 2, 4, tzinfo=UTC))
    assert slot_iso(sundays.following(at("2026-12-02T00:00:00"))) == "2026-12-06T04:00:00Z"


def test_a_grid_before_its_start_has_no_previous_slot():
    later = every(hours=1, start=datetime.datetime(2030, 1, 1, tzinfo=UTC))
    assert later.previous(at("2026-12-02T00:00:00")) is None
    assert slot_iso(later.following(at("2026-12-02T00:00:00"))) == "2030-01-01T00:00:00Z"


def test_cron_slots_are_utc_unless_a_time_zone_is_given():
    nightly = cron("0 3 * * *")
    assert slot_iso(nightly.previous(at("2026-12-02T03:00:00"))) == "2026-12-02T03:00:00Z"  # a slot counts at once
    assert slot_iso(nightly.previous(at("2026-12-02T02:59:59"))) == "2026-12-01T03:00:00Z"
    assert slot_iso(nightly.following(at("2026-12-02T03:00:00"))) == "2026-12-03T03:00:00Z"
    paris = cron("0 3 * * *", tz="Europe/Paris")  # UTC+1 in December
    assert slot_iso(paris.following(at("2026-12-02T00:00:00"))) == "2026-12-02T02:00:00Z"
    assert list(map(slot_iso, nightly.slots(at("2026-12-01T12:00:00"), at("2026-12-03T03:00:00")))) == [
        "2026-12-02T03:00:00Z", "2026-12-03T03:00:00Z"]


@pytest.mark.parametrize("make, error", [
    (lambda: every(), "at least 1 second"),
    (lambda: every(minutes=1.5), "whole number"),
    (lambda: every(minutes=-1), "whole number"),
    (lambda: every(minutes=1, catch_up="some"), "catch_up must be one of latest, all"),
    (lambda: every(minutes=1, max_lateness=0), "max_lateness must be a number of seconds > 0"),
    (lambda: cron("0 3 * *"), "not a cron expression"),
    (lambda: cron("0 0 3 * * *"), "give five fields"),
    (lambda: cron("0 3 * * *", tz="Mars/Olympus"), "unknown time zone"),
])
def test_bad_schedules_are_refused_with_one_line_naming_the_problem(make, error):
    with pytest.raises(ConfigurationError, match=error):
        make()


def test_cron_without_croniter_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "croniter", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'sqsmaster\[cron\]'"):
        cron("0 3 * * *")


def test_due_slots_collapse_or_catch_up_within_max_lateness():
    ten, now = every(minutes=10), at("2026-12-02T17:05:00")
    last = at("2026-12-02T16:00:00")
    assert list(map(slot_iso, due_slots(ten, last, now))) == ["2026-12-02T17:00:00Z"]
    caught_up = due_slots(every(minutes=10, catch_up="all"), last, now)
    assert [slot_iso(s)[11:16] for s in caught_up] == ["16:10", "16:20", "16:30", "16:40", "16:50", "17:00"]
    bounded = due_slots(every(minutes=10, catch_up="all", max_lateness=1500), last, now)
    assert [slot_iso(s)[11:16] for s in bounded] == ["16:40", "16:50", "17:00"]
    assert due_slots(ten, at("2026-12-02T17:00:00"), now) == []  # sent already
    assert len(due_slots(every(seconds=1, catch_up="all"), now - 10 * MAX_CATCH_UP, now)) == MAX_CATCH_UP


def test_a_schedule_that_never_fired_starts_with_a_recent_slot_or_the_next_one():
    ten = every(minutes=10)
    assert due_slots(ten, None, at("2026-12-02T17:00:00") + FIRST_SLOT_WINDOW) == [at("2026-12-02T17:00:00")]
    assert due_slots(ten, None, at("2026-12-02T17:00:00") + FIRST_SLOT_WINDOW + 1) == []


@pytest.mark.parametrize("schedule, expression", [
    (every(minutes=1), "cron(* * * * ? *)"),
    (every(minutes=10), "cron(0/10 * * * ? *)"),
    (every(hours=6), "cron(0 0/6 * * ? *)"),
    (every(days=1), "cron(0 0 * * ? *)"),
    (every(days=1, start=datetime.datetime(2000, 1, 1, 3, 30, tzinfo=UTC)), "cron(30 3 * * ? *)"),
    (every(weeks=1), "cron(0 0 ? * 5 *)"),  # the epoch's Thursday is EventBridge's 5
    (every(minutes=7), "rate(7 minutes)"),
    (cron("0 3 * * *"), "cron(0 3 * * ? *)"),
    (cron("15 4 1 * *"), "cron(15 4 1 * ? *)"),
    (cron("0 9 * * 1-5"), "cron(0 9 ? * 2-6 *)"),
    (cron("0 9 * * 0"), "cron(0 9 ? * 1 *)"),
    (cron("0 9 * * 5-7"), "cron(0 9 ? * 6-7,1 *)"),
    (cron("0 9 * * MON-FRI"), "cron(0 9 ? * MON-FRI *)"),
    (cron("@daily"), "cron(0 0 * * ? *)"),
])
def test_eventbridge_expressions_fire_on_the_same_grid(schedule, expression):
    assert schedule.eventbridge() == expression


@pytest.mark.parametrize("schedule, error", [
    (every(seconds=30), "whole minutes"),
    (cron("0 9 1 * 1"), "OR the day of the week"),
])
def test_schedules_eventbridge_cannot_express_are_refused(schedule, error):
    with pytest.raises(ConfigurationError, match=error):
        schedule.eventbridge()


def test_a_scheduled_function_must_run_without_kwargs():
    with pytest.raises(ConfigurationError, match="sent with no kwargs"):
        Registry().register(lambda user: None, name="needs_user", schedule=every(minutes=1))
    with pytest.raises(ConfigurationError, match="schedule= takes every"):
        Registry().register(lambda: None, name="bad", schedule="every minute")


TASKS = '''
from sqsmaster import Registry, cron, every

registry = Registry()


@registry.task(schedule=cron("0 3 * * *", tz="Europe/Paris", catch_up="all"))
def nightly():
    pass


@registry.task(schedule=every(minutes=7, queue="https://sqs.eu-west-1.amazonaws.com/123456789012/jobs.fifo"))
def sweep():
    pass


@registry.task
def plain(x):
    pass
'''


@pytest.fixture
def tasks_module(tmp_path, monkeypatch):
    name = f"periodic_cli_{abs(hash(str(tmp_path)))}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(TASKS))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_schedules_lists_each_periodic_task_with_its_last_and_next_slot(tasks_module, tmp_path, capsys):
    # Given a store where nightly last fired for 2026-12-01T02:00Z
    url = f"sqlite:///{tmp_path}/jobs.db"
    store = open_store(url)
    store.mark_fired(FiredRow("nightly", at("2026-12-01T02:00:00"), at("2026-12-01T02:00:01"), "vm:42:ab"))
    store.close()
    # When the operator lists the schedules
    assert main(["schedules", "--tasks", tasks_module, "--store", url]) == 0
    lines = capsys.readouterr().out.splitlines()
    # Then both periodic tasks are there (not the plain one), with the last slot and who sent it
    assert lines[0].split() == ["TASK", "SCHEDULE", "CATCH-UP", "LAST", "SENT", "NEXT"]
    [nightly] = [line for line in lines if line.startswith("nightly")]
    assert "cron '0 3 * * *' (Europe/Paris)" in nightly and " all " in nightly
    assert "2026-12-01T02:00:00Z by vm:42:ab" in nightly
    [sweep] = [line for line in lines if line.startswith("sweep")]
    assert "every 7 minutes" in sweep and "never" in sweep
    assert not any(line.startswith("plain") for line in lines)


def test_schedules_with_a_store_that_does_not_exist_exits_3(tasks_module, tmp_path, capsys):
    assert main(["schedules", "--tasks", tasks_module, "--store", f"sqlite:///{tmp_path}/none.db"]) == 3
    assert "does not exist" in capsys.readouterr().err


def test_export_prints_eventbridge_scheduler_definitions(tasks_module, capsys):
    # When the schedules are exported for EventBridge
    code = main(["schedule", "export", "--eventbridge", "--tasks", tasks_module, "--queue",
                 "https://sqs.us-east-2.amazonaws.com/123456789012/work", "--role-arn", "arn:aws:iam::1:role/r"])
    out, err = capsys.readouterr()
    assert code == 0, err
    definitions = {one["Name"]: one for one in json.loads(out)}
    # Then each periodic task has one, in EventBridge's syntax, sending the task's body to its queue
    nightly, sweep = definitions["sqsmaster-nightly"], definitions["sqsmaster-sweep"]
    assert (nightly["ScheduleExpression"], nightly["ScheduleExpressionTimezone"]) == ("cron(0 3 * * ? *)",
                                                                                      "Europe/Paris")
    assert nightly["Target"] == {"Arn": "arn:aws:sqs:us-east-2:123456789012:work", "RoleArn": "arn:aws:iam::1:role/r",
                                 "Input": '{"task": "nightly", "kwargs": {}}'}
    assert nightly["FlexibleTimeWindow"] == {"Mode": "OFF"}
    assert sweep["ScheduleExpression"] == "rate(7 minutes)"
    assert sweep["Target"]["Arn"] == "arn:aws:sqs:eu-west-1:123456789012:jobs.fifo"
    assert sweep["Target"]["SqsParameters"] == {"MessageGroupId": "sweep"}
    # And the one that will not fire on the workers' grid says so
    assert "rate(7 minutes) counts from the schedule's creation" in err


def test_export_without_a_queue_or_a_format_is_a_usage_error(tasks_module, capsys):
    assert main(["schedule", "export", "--eventbridge", "--tasks", tasks_module]) == 2
    assert "no queue to send it to: give --queue URL" in capsys.readouterr().err
    assert main(["schedule", "export", "--tasks", tasks_module]) == 2
    assert "give the format: --eventbridge" in capsys.readouterr().err


def readme_block(after: str) -> str:
    """The literal block of README.rst that starts with the line ``after``, as code."""
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "README.rst").read_text()
    lines = text.split("\n    " + after + "\n", 1)[1].splitlines()
    block = [after]
    for line in lines:
        if line and not line.startswith("    "):
            break
        block.append(line[4:])
    return "\n".join(block)


def test_the_readme_examples_register_what_they_say(monkeypatch, tmp_path, make_queue, sqs_client):
    from sqsmaster.worker.registry import default_registry
    from sqsmaster.worker.scheduler import QueueSender, Scheduler

    # Given a default registry of this test's own (a lock left in it would reach other tests' workers)
    monkeypatch.setattr(default_registry, "_tasks", {})
    # When the README's examples run
    exec(compile(readme_block("# periodic.py"), "README.rst", "exec"), {"__name__": "periodic"})
    exec(compile(readme_block("from sqsmaster import task"), "README.rst", "exec"), {"__name__": "locks"})
    # Then the periodic tasks have their schedules, and a scheduler sends their slots
    nightly = default_registry.get("nightly_report").schedule
    assert (nightly.describe(), nightly.catch_up, nightly.max_lateness) == ("cron '0 3 * * *' (Europe/Paris)",
                                                                            "all", 6 * 3600)
    assert default_registry.get("refresh_cache").schedule.describe() == "every 10 minutes"
    url, now = make_queue(), at("2026-12-02T02:00:30")  # 03:00 in Paris, and on the 10-minute grid
    specs = [default_registry.get(name) for name in default_registry.names()]
    Scheduler(specs, open_store(f"sqlite:///{tmp_path}/jobs.db"), QueueSender(url), "readme",
              clock=lambda: now).run_pass()
    messages = sqs_client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"])
    assert sorted(m["MessageAttributes"]["schedule_slot"]["StringValue"] for m in messages["Messages"]) == [
        "nightly_report@2026-12-02T02:00:00Z", "refresh_cache@2026-12-02T02:00:00Z"]
    # And the locked task locks per user_id, retrying every 10 s
    sync = default_registry.get("sync_account")
    assert (sync.lock, sync.lock_key, sync.lock_retry) == (True, ("user_id",), 10)
