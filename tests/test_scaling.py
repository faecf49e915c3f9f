"""Autoscaling: the worker count formula, ``sqsmaster scale`` on moto's SQS and ECS over HTTP, and the Provisioner."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber

from sqsmaster.backends import open_queue
from sqsmaster.cli import main
from sqsmaster.errors import ConfigurationError, QueueDoesNotExist
from sqsmaster.ops.depth import DepthUnknown
from sqsmaster.ops.scaling import (
    QueueDepth,
    ScaleIn,
    Scaler,
    ScalingRule,
    desired_count,
    scale_every,
)

ROOT = Path(__file__).resolve().parent.parent


# -- the formula ----------------------------------------------------------------------------------

@pytest.mark.parametrize("visible, in_flight, delayed, per_worker, minimum, maximum, count_delayed, expected", [
    (0, 0, 0, 1, 0, 10, False, 0),     # nothing at all: zero workers
    (0, 0, 0, 1, 2, 10, False, 2),     # ... unless a minimum says otherwise
    (1, 0, 0, 10, 0, 10, False, 1),    # one message is one worker, however many a worker takes
    (10, 0, 0, 10, 0, 10, False, 1),
    (11, 0, 0, 10, 0, 10, False, 2),   # ceil, never floor: the eleventh message needs a worker
    (3, 2, 0, 2, 0, 10, False, 3),     # in flight counts: those tasks run on workers that must stay
    (0, 5, 0, 1, 0, 10, False, 5),
    (3, 2, 4, 2, 0, 10, False, 3),     # delayed ones are not counted by default...
    (3, 2, 4, 2, 0, 10, True, 5),      # ... and are with count_delayed
    (0, 0, 4, 2, 0, 10, False, 1),     # only delayed messages: one worker, ready when they come due
    (0, 0, 9, 2, 0, 10, True, 5),
    (1000, 0, 0, 1, 0, 7, False, 7),   # clamped to the maximum
    (5, 0, 0, 1, 0, 0, False, 0),      # a maximum of 0 switches the service off
    (1, 0, 0, 1, 3, 3, False, 3),      # min == max: a fixed size
])
def test_desired_count_is_the_backlog_per_worker_rounded_up_within_bounds(
        visible, in_flight, delayed, per_worker, minimum, maximum, count_delayed, expected):
    assert desired_count(visible, in_flight, delayed, per_worker, minimum, maximum,
                         count_delayed=count_delayed) == expected


@pytest.mark.parametrize("per_worker, minimum, maximum, counts, says", [
    (0, 0, 10, (1, 0, 0), "per_worker must be an integer >= 1, not 0"),
    (1.5, 0, 10, (1, 0, 0), "per_worker must be an integer >= 1, not 1.5"),
    (1, -1, 10, (1, 0, 0), "minimum must be an integer >= 0, not -1"),
    (1, 5, 3, (1, 0, 0), "minimum (5) must not exceed maximum (3)"),
    (1, 0, 10, (-1, 0, 0), "visible must be >= 0, not -1"),
])
def test_a_bad_rule_or_count_is_a_configuration_error_naming_it(per_worker, minimum, maximum, counts, says):
    with pytest.raises(ConfigurationError, match=None) as raised:
        desired_count(*counts, per_worker, minimum, maximum)
    assert str(raised.value) == says


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_scale_in_waits_until_a_lower_count_has_held_while_scale_out_is_at_once():
    # Given a scale-in delay of 60 s and a service at 5
    clock = FakeClock()
    policy = ScaleIn(60, clock=clock)
    busy = QueueDepth(1, 1, 0)
    # Then a higher count is taken at once
    assert policy.apply(8, 5, busy) == 8
    # And a lower one only after it held for 60 s
    assert policy.apply(2, 8, busy) == 8
    clock.sleep(59.9)
    assert policy.apply(3, 8, busy) == 8
    clock.sleep(0.1)
    assert policy.apply(3, 8, busy) == 3
    # And a dip that ends (the count back up) starts the wait again
    assert policy.apply(1, 3, busy) == 3
    clock.sleep(30)
    assert policy.apply(3, 3, busy) == 3
    clock.sleep(30)
    assert policy.apply(1, 3, busy) == 3


def test_scale_in_when_idle_never_lowers_the_count_while_a_message_is_in_flight():
    policy = ScaleIn(0, when_idle=True, clock=FakeClock())
    assert policy.apply(1, 4, QueueDepth(0, 1, 0)) == 4
    assert policy.apply(0, 4, QueueDepth(0, 0, 0)) == 0
    assert policy.apply(6, 4, QueueDepth(0, 9, 0)) == 6


# -- the loop (injected clock, real queues) ------------------------------------------------------

def test_scale_every_runs_a_round_per_period_until_stopped():
    # Given a mem:// queue with 3 messages and a loop every 10 s on a fake clock
    from sqsmaster import TaskManager

    manager = TaskManager("mem://scale-loop")
    for n in range(3):
        manager.submit("Work", n=n)
    clock = FakeClock()
    seen: list[tuple[float, int]] = []
    scaler = Scaler([open_queue("mem://scale-loop")], ScalingRule(2))
    # When it runs until the fourth round is seen
    scale_every(scaler, 10, lambda decision: seen.append((clock(), decision.desired)),
                lambda: len(seen) >= 4, clock=clock, sleep=clock.sleep)
    # Then the rounds came 10 s apart, each with the count
    assert seen == [(1000.0, 2), (1010.0, 2), (1020.0, 2), (1030.0, 2)]


def test_scale_every_ends_on_a_missing_queue_and_on_any_first_round_failure(sqs_server):
    gone = f"{sqs_server.endpoint}/123456789012/never-made-{uuid.uuid4().hex[:8]}"
    scaler = Scaler([open_queue(gone, create=False)], ScalingRule(1))
    with pytest.raises(QueueDoesNotExist):
        scale_every(scaler, 1, lambda decision: None, lambda: False, clock=FakeClock(), sleep=lambda s: None)


def test_a_later_round_that_fails_is_logged_and_the_next_one_tries_again(make_queue, fault_proxy, caplog):
    # Given a queue behind a proxy that answers the second GetQueueAttributes with a 503
    url = make_queue()
    fault_proxy.fail("GetQueueAttributes", "ServiceUnavailable", status=503, calls={2, 3, 4, 5})
    client = boto3.client("sqs", endpoint_url=fault_proxy.endpoint, region_name="us-east-1",
                          config=Config(retries={"total_max_attempts": 1}))
    queue = open_queue(url, client=client, create=False)
    seen: list[int] = []
    clock = FakeClock()
    # When the loop runs three rounds
    scale_every(Scaler([queue], ScalingRule(1)), 5, lambda d: seen.append(d.desired),
                lambda: fault_proxy.calls.get("GetQueueAttributes", 0) >= 6, clock=clock, sleep=clock.sleep)
    # Then the failed rounds were logged and the loop went on to a good round
    assert seen == [0, 0]
    assert sum("scaling round failed" in record.message for record in caplog.records) == 4


# -- sqsmaster scale --print on moto's SQS ------------------------------------------------------

def fill(client: Any, url: str, visible: int = 0, in_flight: int = 0, delayed: int = 0) -> None:
    """Put messages in the three states SQS counts."""
    for n in range(visible + in_flight):
        client.send_message(QueueUrl=url, MessageBody=json.dumps({"task": "Work", "kwargs": {"n": n}}))
    received = 0
    while received < in_flight:
        batch = client.receive_message(QueueUrl=url, MaxNumberOfMessages=min(10, in_flight - received),
                                       VisibilityTimeout=600).get("Messages", [])
        received += len(batch)
    for _ in range(delayed):
        client.send_message(QueueUrl=url, MessageBody="{}", DelaySeconds=900)


def scale(capsys: Any, *argv: str) -> tuple[int, str, str]:
    code = main(["scale", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_print_counts_visible_in_flight_and_with_the_flag_delayed_messages(sqs_client, make_queue, capsys):
    # Given a queue with 3 visible, 2 in-flight and 4 delayed messages
    url = make_queue()
    fill(sqs_client, url, visible=3, in_flight=2, delayed=4)
    # Then --print gives ceil(5 / 2) = 3, and 5 with the delayed ones
    assert scale(capsys, url, "--per-worker", "2", "--print") == (0, "3\n", "")
    assert scale(capsys, url, "--per-worker", "2", "--count-delayed") == (0, "5\n", "")
    # And --json gives the counts behind it
    code, out, _ = scale(capsys, url, "--per-worker", "2", "--json")
    assert json.loads(out) == {"depth": {"visible": 3, "in_flight": 2, "delayed": 4}, "target": 3, "desired": 3,
                               "service": None, "changed": False}
    # And the bounds hold
    assert scale(capsys, url, "--per-worker", "1", "--max", "4")[1] == "4\n"
    assert scale(capsys, url, "--per-worker", "10", "--min", "2")[1] == "2\n"


def test_print_sums_the_queues_that_feed_one_service_and_says_0_only_when_all_are_empty(
        sqs_client, make_queue, capsys):
    first, second, empty = make_queue(), make_queue(), make_queue()
    fill(sqs_client, first, visible=3)
    fill(sqs_client, second, in_flight=2)
    assert scale(capsys, first, second, "--per-worker", "2")[1] == "3\n"
    assert scale(capsys, empty, "--per-worker", "2")[1] == "0\n"
    fill(sqs_client, empty, delayed=1)
    assert scale(capsys, empty, "--per-worker", "2")[1] == "1\n"


@pytest.mark.parametrize("argv, says", [
    (["--per-worker", "0"], "--per-worker must be >= 1, not 0"),
    (["--per-worker", "1", "--min", "5", "--max", "3"], "--min 5 exceeds --max 3"),
    (["--per-worker", "1", "--min", "-1"], "--min must be >= 0, not -1"),
    (["--per-worker", "two"], "invalid int value: 'two'"),
    (["--per-worker", "1", "--scale-in-after", "30"], "--scale-in-after needs --every"),
    (["--per-worker", "1", "--every", "0"], "--every must be > 0 seconds"),
    (["--per-worker", "1", "--ecs", "just-a-cluster"], "--ecs takes CLUSTER/SERVICE, not 'just-a-cluster'"),
    (["--per-worker", "1", "--ecs", "c/s", "--print"], "not allowed with argument"),
])
def test_bad_numbers_and_options_are_one_line_and_exit_2(make_queue, capsys, argv, says):
    code, out, err = scale(capsys, make_queue(), *argv)
    assert (code, out) == (2, "")
    assert says in err and len(err.strip().splitlines()) == 1


def test_a_queue_given_twice_would_count_twice_and_is_refused(make_queue, capsys):
    url = make_queue()
    code, _, err = scale(capsys, url, url, "--per-worker", "1")
    assert code == 2 and "queue given twice" in err


def test_a_missing_queue_is_one_line_and_exit_3(sqs_server, capsys):
    url = f"{sqs_server.endpoint}/123456789012/nope-{uuid.uuid4().hex[:8]}"
    code, out, err = scale(capsys, url, "--per-worker", "1")
    assert (code, out) == (3, "")
    assert "does not exist" in err and len(err.strip().splitlines()) == 1


# -- sqsmaster scale --ecs on moto's ECS ---------------------------------------------------------

@pytest.fixture
def ecs_client(sqs_server) -> Any:
    client = boto3.client("ecs", endpoint_url=sqs_server.endpoint, region_name="us-east-1")
    yield client
    client.close()


@pytest.fixture
def make_service(ecs_client) -> Callable[..., tuple[str, str]]:
    """Factory: a fresh cluster with a worker service (desired count ``desired``); returns (cluster, service)."""

    def factory(desired: int = 0) -> tuple[str, str]:
        cluster, service = f"c-{uuid.uuid4().hex[:8]}", f"workers-{uuid.uuid4().hex[:8]}"
        ecs_client.create_cluster(clusterName=cluster)
        # stopTimeout above the worker's --grace + 15 s (the README's rule), ECS's maximum being 120
        ecs_client.register_task_definition(family=service, containerDefinitions=[{
            "name": "worker", "image": "sqsmaster", "memory": 256, "stopTimeout": 120,
            "command": ["sqsmaster", "worker", "QUEUE_URL", "--tasks", "tasks", "--grace", "90"]}])
        ecs_client.create_service(cluster=cluster, serviceName=service, taskDefinition=service, desiredCount=desired)
        return cluster, service

    return factory


def desired_on_ecs(client: Any, cluster: str, service: str) -> int:
    return int(client.describe_services(cluster=cluster, services=[service])["services"][0]["desiredCount"])


@pytest.fixture
def ecs_through_proxy(fault_proxy, monkeypatch) -> Any:
    """``sqsmaster scale --ecs`` talks to moto's ECS through the proxy, which counts each call by name."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_ECS", fault_proxy.endpoint)
    return fault_proxy


def test_ecs_sets_the_desired_count_and_writes_only_when_it_changes(
        sqs_client, make_queue, make_service, ecs_client, ecs_through_proxy, capsys):
    # Given a service at 0 and a queue with 5 visible and 2 in-flight messages
    cluster, service = make_service(desired=0)
    url = make_queue()
    fill(sqs_client, url, visible=5, in_flight=2)
    # When sqsmaster scale --ecs runs
    code, out, _ = scale(capsys, url, "--per-worker", "2", "--ecs", f"{cluster}/{service}")
    # Then the service's desired count is ceil(7 / 2) = 4, set by one UpdateService call
    assert code == 0 and desired_on_ecs(ecs_client, cluster, service) == 4
    assert out == f"{cluster}/{service}: desired 4 (set, was 0; running 0) for 5 visible, 2 in flight, 0 delayed\n"
    assert ecs_through_proxy.calls.get("UpdateService") == 1
    # When it runs again with nothing changed
    code, out, _ = scale(capsys, url, "--per-worker", "2", "--ecs", f"{cluster}/{service}", "--json")
    # Then it only described the service: no second UpdateService
    assert code == 0 and json.loads(out)["changed"] is False and json.loads(out)["service"]["desired"] == 4
    assert ecs_through_proxy.calls.get("UpdateService") == 1
    assert ecs_through_proxy.calls.get("DescribeServices") == 2
    # When the queue drains, the count goes to 0 (no scale-in delay in a single round)
    sqs_client.purge_queue(QueueUrl=url)
    assert scale(capsys, url, "--per-worker", "2", "--ecs", f"{cluster}/{service}")[0] == 0
    assert desired_on_ecs(ecs_client, cluster, service) == 0
    assert ecs_through_proxy.calls.get("UpdateService") == 2


def test_scale_in_when_idle_keeps_the_count_while_a_task_runs(
        sqs_client, make_queue, make_service, ecs_client, ecs_through_proxy, capsys):
    cluster, service = make_service(desired=3)
    url = make_queue()
    fill(sqs_client, url, in_flight=1)
    argv = [url, "--per-worker", "1", "--ecs", f"{cluster}/{service}", "--scale-in-when-idle"]
    assert scale(capsys, *argv)[0] == 0
    assert desired_on_ecs(ecs_client, cluster, service) == 3
    assert ecs_through_proxy.calls.get("UpdateService") is None


@pytest.mark.parametrize("which", ["cluster", "service"])
def test_a_missing_ecs_cluster_or_service_is_one_line_and_exit_3(
        make_queue, make_service, ecs_through_proxy, capsys, which):
    cluster, service = make_service()
    target = f"no-such-cluster/{service}" if which == "cluster" else f"{cluster}/no-such-service"
    code, out, err = scale(capsys, make_queue(), "--per-worker", "1", "--ecs", target)
    assert (code, out) == (3, "")
    assert target in err and len(err.strip().splitlines()) == 1
    assert ecs_through_proxy.calls.get("UpdateService") is None


def test_an_ecs_refusal_is_exit_1_and_access_denied_exit_2(make_queue, make_service, ecs_through_proxy, capsys):
    cluster, service = make_service()
    url = make_queue()
    ecs_through_proxy.fail("DescribeServices", "AccessDeniedException", calls={1})
    ecs_through_proxy.fail("UpdateService", "InvalidParameterException")
    code, _, err = scale(capsys, url, "--per-worker", "1", "--min", "1", "--ecs", f"{cluster}/{service}")
    assert code == 2 and "AccessDeniedException" in err
    code, _, err = scale(capsys, url, "--per-worker", "1", "--min", "1", "--ecs", f"{cluster}/{service}")
    assert code == 1 and "UpdateService" in err and "InvalidParameterException" in err


# -- the loop, as a process: SIGTERM and Ctrl-C end it cleanly ------------------------------------

def start_loop(tmp_path: Path, argv: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, Path]:
    out = tmp_path / f"scale-{uuid.uuid4().hex[:6]}.out"
    process = subprocess.Popen([sys.executable, "-m", "sqsmaster", "scale", *argv], cwd=ROOT,
                               env={**os.environ, "PYTHONUNBUFFERED": "1", **env}, stdout=out.open("w"),
                               stderr=subprocess.STDOUT)
    return process, out


def wait_for_lines(out: Path, count: int, process: subprocess.Popen, timeout: float = 20) -> list[str]:
    # 20 s: starting Python, boto3 and two clients takes seconds on a loaded 2-core machine.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = out.read_text().splitlines()
        if len(lines) >= count:
            return lines
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"wanted {count} lines, got: {out.read_text()!r}")


@pytest.mark.parametrize("signals", [[signal.SIGTERM], [signal.SIGINT], [signal.SIGTERM, signal.SIGTERM]])
def test_every_loops_until_sigterm_or_ctrl_c_and_exits_0(sqs_client, make_queue, make_service, ecs_client,
                                                        sqs_server, tmp_path, signals):
    # Given a loop every 0.2 s that writes to an ECS service, and a queue with 3 messages
    cluster, service = make_service()
    url = make_queue()
    fill(sqs_client, url, visible=3)
    process, out = start_loop(tmp_path, [url, "--per-worker", "1", "--ecs", f"{cluster}/{service}", "--every",
                                         "0.2", "--json"], {"AWS_ENDPOINT_URL_ECS": sqs_server.endpoint})
    try:
        # When two rounds have run (the first set the count)
        wait_for_lines(out, 2, process)
        assert desired_on_ecs(ecs_client, cluster, service) == 3
        # When the signals come (two at once: the second ends a round in progress at once)
        for signum in signals:
            process.send_signal(signum)
        # Then it exits 0 within a round and a call (15 s: a loaded machine)
        assert process.wait(timeout=15) == 0, out.read_text()
    finally:
        process.kill()
        process.wait()
    rounds = [json.loads(line) for line in out.read_text().splitlines()]
    assert rounds[0]["changed"] is True and all(not r["changed"] for r in rounds[1:])


def test_every_holds_a_scale_in_for_the_delay_then_lowers_the_count(sqs_client, make_queue, make_service, ecs_client,
                                                                   sqs_server, tmp_path):
    # Given a loop with a 1 s scale-in delay on a service the queue's 4 messages set to 4
    cluster, service = make_service()
    url = make_queue()
    fill(sqs_client, url, visible=4)
    process, out = start_loop(tmp_path, [url, "--per-worker", "1", "--ecs", f"{cluster}/{service}", "--every",
                                         "0.1", "--scale-in-after", "1", "--json"],
                              {"AWS_ENDPOINT_URL_ECS": sqs_server.endpoint})
    try:
        wait_for_lines(out, 1, process)
        # When the queue empties
        sqs_client.purge_queue(QueueUrl=url)
        seen = len(out.read_text().splitlines())
        lines = wait_for_lines(out, seen + 30, process)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        process.kill()
        process.wait()
    # Then rounds saw the target 0 while the count stayed 4, until it was lowered once
    rounds = [json.loads(line) for line in lines]
    held = [r for r in rounds if r["target"] == 0 and r["desired"] == 4]
    lowered = [r for r in rounds if r["changed"] and r["desired"] == 0]
    assert held and len(lowered) == 1 and desired_on_ecs(ecs_client, cluster, service) == 0


# -- the Provisioner, sqstaskmaster's and ours ----------------------------------------------------

def rule(url: str, cluster: str, service: str, **extra: Any) -> dict[str, Any]:
    return {"queue_name": url, "service_name": service, "cluster_name": cluster, **extra}


def test_both_provisioners_set_the_same_counts_from_sqstaskmasters_rules(
        sqs_client, make_queue, make_service, ecs_client, sqs_server, monkeypatch):
    from sqstaskmaster.queue_scale import Provisioner as TheirProvisioner

    from sqsmaster.queue_scale import Provisioner

    # Given two services at 0, and the same all-or-nothing rule for each library's Provisioner
    monkeypatch.setenv("AWS_ENDPOINT_URL", sqs_server.endpoint)  # sqstaskmaster's boto3 defaults find moto
    theirs_service, ours_service = make_service(), make_service()
    for visible, in_flight, delayed, expected in [(0, 0, 0, 0), (0, 0, 1, 3), (2, 1, 0, 3), (0, 0, 0, 0)]:
        # When their queue holds these messages and both run
        url = make_queue()
        fill(sqs_client, url, visible=visible, in_flight=in_flight, delayed=delayed)
        TheirProvisioner([rule(url, *theirs_service, active_size=3)]).run()
        Provisioner([rule(url, *ours_service, active_size=3)]).run()
        # Then both services have the same desired count
        assert desired_on_ecs(ecs_client, *theirs_service) == expected
        assert desired_on_ecs(ecs_client, *ours_service) == expected


class CountingCalls:
    """A botocore event hook on the client a test passes in: counts the ECS calls it made, by name."""

    def __init__(self, client: Any) -> None:
        self.calls: dict[str, int] = {}
        client.meta.events.register("before-call.ecs.*", self)

    def __call__(self, model: Any, **kwargs: Any) -> None:
        self.calls[model.name] = self.calls.get(model.name, 0) + 1


def test_the_provisioner_writes_only_on_change_and_scales_in_proportion_with_per_worker(
        sqs_client, make_queue, make_service, ecs_client):
    from sqsmaster.ops.scaling import Provisioner

    # Given a proportional rule: 2 messages per worker, 1 to 4 workers
    url = make_queue()
    cluster, service = make_service()
    calls = CountingCalls(ecs_client)
    provisioner = Provisioner([rule(url, cluster, service, per_worker=2, min_size=1, max_size=4)],
                              sqs=sqs_client, ecs=ecs_client)
    # When it runs on an empty queue, then on 5 messages, then on 20, then again on 20
    counts = []
    for visible in (0, 5, 15, 0):
        fill(sqs_client, url, visible=visible)
        provisioner.run()
        counts.append(desired_on_ecs(ecs_client, cluster, service))
    # Then the counts follow ceil(backlog / 2) within [1, 4], and UpdateService came only for changes
    assert counts == [1, 3, 4, 4]
    assert calls.calls["UpdateService"] == 3


def test_a_failing_rule_is_notified_and_the_next_rule_still_runs(sqs_client, make_queue, make_service, ecs_client):
    from botocore.exceptions import ClientError

    from sqsmaster.queue_scale import Provisioner

    # Given a rule for a missing service, then a good one
    url = make_queue()
    fill(sqs_client, url, visible=1)
    cluster, service = make_service()
    notified: list[tuple[BaseException, Any]] = []
    rules = [rule(url, cluster, "no-such-service", active_size=2), rule(url, cluster, service, active_size=2)]
    provisioner = Provisioner(rules, notify=lambda exc, context=None: notified.append((exc, context)),
                              sqs=sqs_client, ecs=ecs_client)
    # When it runs
    provisioner.run()
    # Then notify got a ClientError with the rule, and the good rule was applied
    [(error, context)] = notified
    assert isinstance(error, ClientError) and context == rules[0]
    assert desired_on_ecs(ecs_client, cluster, service) == 2


def test_a_queue_reporting_no_counts_is_notified_and_scales_nothing(make_queue, make_service, ecs_client):
    from sqsmaster.ops.scaling import Provisioner

    # Given a queue whose GetQueueAttributes answer lacks the in-flight count (Stubber: moto always gives it)
    url = make_queue()
    cluster, service = make_service(desired=2)
    client = boto3.client("sqs", region_name="us-east-1")
    notified: list[BaseException] = []
    with Stubber(client) as stubber:
        stubber.add_response("get_queue_attributes", {"Attributes": {"ApproximateNumberOfMessages": "0",
                                                                     "ApproximateNumberOfMessagesDelayed": "0"}})
        # When the provisioner runs
        Provisioner([rule(url, cluster, service, active_size=2)], notify=lambda exc, context=None:
                    notified.append(exc), sqs=client, ecs=ecs_client).run()
    # Then it said so, rather than a KeyError out of run(), and left the service alone
    assert len(notified) == 1 and isinstance(notified[0], DepthUnknown)
    assert "ApproximateNumberOfMessagesNotVisible" in str(notified[0])
    assert desired_on_ecs(ecs_client, cluster, service) == 2


def test_rules_from_a_generator_are_run_not_spent_by_the_checks(sqs_client, make_queue, make_service, ecs_client):
    from sqsmaster.queue_scale import Provisioner

    # Given rules from a generator (sqstaskmaster's checks spent it: its run() then saw no rule)
    url = make_queue()
    fill(sqs_client, url, visible=1)
    cluster, service = make_service()
    Provisioner((r for r in [rule(url, cluster, service, active_size=2)]), sqs=sqs_client, ecs=ecs_client).run()
    assert desired_on_ecs(ecs_client, cluster, service) == 2


def test_a_service_state_override_keeps_the_count(sqs_client, make_queue, make_service, ecs_client):
    from sqsmaster.queue_scale import Provisioner, ServiceState

    class Deploying(Provisioner):
        def service_state(self, _rule):
            return ServiceState.STARTING

    url = make_queue()
    fill(sqs_client, url, visible=1)
    cluster, service = make_service()
    Deploying([rule(url, cluster, service, active_size=2)], sqs=sqs_client, ecs=ecs_client).run()
    assert desired_on_ecs(ecs_client, cluster, service) == 0


def test_the_provisioner_keeps_sqstaskmasters_shape_and_checks_rules_up_front(ecs_client):
    from sqstaskmaster import queue_scale as theirs

    from sqsmaster.ops import scaling
    from sqsmaster.queue_scale import Provisioner, ServiceState

    assert Provisioner is scaling.Provisioner and ServiceState is scaling.ServiceState
    for name in ("QUEUE_NAME", "SERVICE_NAME", "CLUSTER_NAME", "ACTIVE_SIZE", "QUEUE_DEPTH_ATTRIBUTES"):
        assert getattr(Provisioner, name) == getattr(theirs.Provisioner, name)
    assert [state.name for state in ServiceState] == [state.name for state in theirs.ServiceState]
    with pytest.raises(TypeError):
        Provisioner(5, ecs=ecs_client)
    with pytest.raises(KeyError, match="active_size"):
        Provisioner([rule("u", "c", "s")], ecs=ecs_client)
    with pytest.raises(KeyError, match="max_size"):
        Provisioner([rule("u", "c", "s", per_worker=2)], ecs=ecs_client)
    with pytest.raises(ConfigurationError, match="per_worker must be an integer >= 1"):
        Provisioner([rule("u", "c", "s", per_worker=0, max_size=3)], ecs=ecs_client)
    with pytest.raises(ConfigurationError, match="only with per_worker"):
        Provisioner([rule("u", "c", "s", active_size=3, min_size=1)], ecs=ecs_client)


# -- attacks: a frozen endpoint, a depth that cannot be read, a queue no fleet can see --------------

def test_a_second_signal_ends_a_round_stuck_on_a_frozen_endpoint_at_once(frozen_moto, tmp_path):
    # Given a loop on a moto server process, with a queue and an ECS service there
    process_moto, endpoint = frozen_moto
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")
    ecs = boto3.client("ecs", endpoint_url=endpoint, region_name="us-east-1")
    url = sqs.create_queue(QueueName="frozen")["QueueUrl"]
    ecs.create_cluster(clusterName="c")
    ecs.register_task_definition(family="w", containerDefinitions=[{"name": "w", "image": "w", "memory": 128}])
    ecs.create_service(cluster="c", serviceName="w", taskDefinition="w", desiredCount=0)
    process, out = start_loop(tmp_path, [url, "--per-worker", "1", "--ecs", "c/w", "--every", "0.2"],
                              {"AWS_ENDPOINT_URL_ECS": endpoint})
    try:
        wait_for_lines(out, 2, process)
        # When the server freezes (a partition) and a round hangs on it
        process_moto.send_signal(signal.SIGSTOP)
        time.sleep(0.5)
        # Then one signal asks the loop to end after the round, a second one ends it now, with exit 0
        process.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        assert process.poll() is None  # still in its bounded call
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0, out.read_text()
        assert time.monotonic() - started < 5  # not the 10 s read timeout: margin for a loaded machine
    finally:
        process_moto.send_signal(signal.SIGCONT)
        process.kill()
        process.wait()


def test_nothing_is_written_when_the_depth_cannot_be_read(make_queue, make_service, ecs_client, ecs_through_proxy,
                                                         sqs_server, capsys, monkeypatch):
    # Given a service at 2 and a queue whose GetQueueAttributes the endpoint refuses (throttled)
    cluster, service = make_service(desired=2)
    url = make_queue()
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", ecs_through_proxy.endpoint)
    ecs_through_proxy.fail("GetQueueAttributes", "RequestThrottled", status=403)
    # When a round runs, then it fails with one line, and the service was neither described nor written
    code, out, err = scale(capsys, url, "--per-worker", "1", "--ecs", f"{cluster}/{service}")
    assert (code, out) == (1, "") and "RequestThrottled" in err
    assert desired_on_ecs(ecs_client, cluster, service) == 2
    assert ecs_through_proxy.calls.get("UpdateService") is None


def test_a_mem_queue_no_fleet_can_see_is_refused(capsys):
    code, _, err = scale(capsys, "mem://work", "--per-worker", "1")
    assert code == 2 and "lives inside one process" in err


def test_get_description_and_get_tags_read_the_service_as_sqstaskmasters_do(make_service, ecs_client):
    from sqsmaster.queue_scale import Provisioner

    cluster, service = make_service(desired=1)
    arn = ecs_client.describe_services(cluster=cluster, services=[service])["services"][0]["serviceArn"]
    ecs_client.tag_resource(resourceArn=arn, tags=[{"key": "state", "value": "deploying"}])
    provisioner = Provisioner([], ecs=ecs_client)
    description = provisioner.get_description(rule("unused", cluster, service, active_size=1))
    assert description["serviceName"] == service and description["desiredCount"] == 1
    assert provisioner.get_description(rule("unused", cluster, "no-such-service", active_size=1)) == {}
    assert provisioner.get_tags(arn) == [{"key": "state", "value": "deploying"}]


def test_a_round_makes_one_get_queue_attributes_per_queue_and_one_describe(
        sqs_client, make_queue, make_service, ecs_through_proxy, capsys, monkeypatch):
    # Given two queues feeding one service, every SQS and ECS call going through the counting proxy
    cluster, service = make_service(desired=1)
    first, second = make_queue(), make_queue()
    fill(sqs_client, first, visible=1)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", ecs_through_proxy.endpoint)
    # When one round runs with the count unchanged
    assert scale(capsys, first, second, "--per-worker", "1", "--ecs", f"{cluster}/{service}")[0] == 0
    # Then it made one GetQueueAttributes per queue, one DescribeServices, and nothing else
    assert ecs_through_proxy.calls == {"GetQueueAttributes": 2, "DescribeServices": 1}


def test_an_unreachable_ecs_endpoint_is_one_line_and_exit_3(sqs_client, make_queue, capsys, monkeypatch):
    import socket

    with socket.socket() as sock:  # a port nothing listens on: connection refused at once
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL_ECS", f"http://127.0.0.1:{port}")
    code, out, err = scale(capsys, make_queue(), "--per-worker", "1", "--ecs", "c/s")
    assert (code, out) == (3, "")
    assert "DescribeServices on ECS service c/s failed" in err and len(err.strip().splitlines()) == 1
