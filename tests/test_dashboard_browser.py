"""The dashboard in a real browser: headless Chromium (Debian's packages) driven by selenium, against
``sqsmaster dashboard`` in its own process, over a real sqlite store and moto's SQS.

Skipped, with the reason, only where no browser can be installed (``tests/browser_setup.sh``).
"""

from __future__ import annotations

import json
import shlex
import time

import pytest

from sqsmaster.store import AttemptRow, JobFilter

from .dashboard_data import fill
from .dashboard_kit import DashboardServer, browser_missing, chrome
from .workerkit import submit, wait_for, worker_factory

pytestmark = [pytest.mark.xdist_group("browser"),
              pytest.mark.skipif(browser_missing() is not None, reason=f"no browser: {browser_missing()}")]

#: Waits for the page (a cold chromium on a loaded 2-core machine renders in a few seconds; the view refreshes
#: every 3 s): generous, since a wait only ends early when what it waits for shows.
WAIT = 20


@pytest.fixture(scope="module")
def driver():
    browser = chrome()
    yield browser
    browser.quit()


@pytest.fixture
def worker(tmp_path):
    """``sqsmaster worker`` processes (killed at the end if still alive), heartbeating every second."""
    yield from worker_factory(tmp_path, ["--sqs-timeout", "4", "--alarm-timeout", "1", "--wait-time", "1"])


@pytest.fixture
def store_url(tmp_path):
    return f"sqlite:///{tmp_path}/jobs.db"


@pytest.fixture
def store(store_url):
    from sqsmaster.store import open_store

    store = open_store(store_url)
    yield store
    store.close()


def until(driver, condition, message="the page"):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT, poll_frequency=0.1).until(lambda d: condition(d), message)


def css(driver, selector):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def text(driver, selector):
    """The text of the first element ``selector`` matches (None: none), read in one step: the view is
    redrawn every few seconds, so an element found in one call may be gone by the next."""
    return driver.execute_script("const e = document.querySelector(arguments[0]); return e && e.innerText",
                                 selector)


def rows(driver, selector="tr[data-message-id]"):
    """``(message id, [cell texts])`` of each row, read in one step."""
    return [tuple(r) for r in driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map("
        "r => [r.dataset.messageId || null, [...r.cells].map(c => c.innerText)])", selector)]


def click(driver, selector):
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def attempt(d):
        try:
            d.find_element(By.CSS_SELECTOR, selector).click()
            return True
        except (StaleElementReferenceException, NoSuchElementException):  # redrawn under us: find it again
            return False

    until(driver, attempt, f"{selector} to click")


def enabled(driver, selector):
    """Whether each element ``selector`` matches is enabled, read in one step."""
    return driver.execute_script("return [...document.querySelectorAll(arguments[0])].map(b => !b.disabled)",
                                 selector)


def loaded(driver):
    """The view has been filled from the API (no "loading", no error)."""
    until(driver, lambda d: (text(d, "#updated") or "").startswith("updated") or text(d, "#error"),
          "the view to load")
    assert text(driver, "#error") is None, text(driver, "#error")


def confirm(driver, expected):
    from selenium.webdriver.support import expected_conditions

    alert = until(driver, expected_conditions.alert_is_present(), "the confirmation")
    text = alert.text
    alert.accept()
    assert expected in text, text
    return text


def receive_all(sqs_client, url):
    found = []
    while batch := sqs_client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                              VisibilityTimeout=30).get("Messages", []):
        found += batch
    return found


def test_every_view_opens_and_shows_the_store(driver, store, store_url, make_queue, sqs_client):
    # Given a store of 300 attempts, running ones, workers, and a message whose kwargs hold markup
    url = make_queue(dead_letter=True)
    sqs_client.send_message(QueueUrl=url, MessageBody="{}")
    fill(store, 300, time.time(), [url])
    hostile = '<img src=x onerror="document.title=\'owned\'">'
    store.put_attempt(AttemptRow("hostile", 1, "resize_image", url, "h", 1, time.time() - 5,
                                 kwargs=json.dumps({"path": hostile}), ended=time.time(), outcome="failed",
                                 exception=f"OSError: {hostile}", traceback=hostile))
    with DashboardServer(store_url, [url]) as server:
        # Overview: SQS depths of the queue and the workers' slots
        driver.get(server.url + "/overview")
        loaded(driver)
        assert text(driver, "#workers-live") == "3" and text(driver, "#slots-idle") == "4"
        # one visible message (SQS's answer may come at the next refresh on a loaded machine)
        until(driver, lambda d: [cells[1] for _, cells in rows(d, "tr[data-queue]")] == ["1"], "the queue depth")
        # Running: four rows, the stale one flagged, each with an elapsed bar and a Kill button
        driver.get(server.url + "/running")
        loaded(driver)
        assert len(rows(driver)) == 4 and len(rows(driver, "tr.stale")) == 1
        assert len(enabled(driver, "button[data-action=kill]")) == 4
        assert driver.execute_script("return document.querySelectorAll('.bar .fill').length") == 4
        # Jobs, failures, dead letters, workers
        for view, selector, least in (("jobs", "tr[data-message-id]", 50), ("failures", "tr[data-group]", 4),
                                      ("dead-letters", "tr[data-message-id]", 1), ("workers", "tbody tr", 3)):
            driver.get(f"{server.url}/{view}")
            loaded(driver)
            assert len(rows(driver, selector)) >= least, view
        # The job page: every attempt, its traceback, the command line; the markup shown as text, never run
        driver.get(server.url + "/jobs/hostile")
        loaded(driver)
        assert hostile in text(driver, "section.attempt")
        assert not css(driver, "#content img") and driver.title != "owned"
        words = shlex.split(text(driver, "#submit-command"))
        assert json.loads(words[words.index("--json") + 1]) == {"path": hostile}
        # The timeline: the report's drawing, as a picture
        driver.get(server.url + "/timeline")
        loaded(driver)
        until(driver, lambda d: d.execute_script("const i = document.getElementById('timeline');"
                                                 "return i && i.complete && i.naturalWidth > 0"), "the timeline")


def test_filtering_jobs_by_status_and_task(driver, store, store_url):
    from selenium.webdriver.support.ui import Select

    fill(store, 400, time.time(), ["http://127.0.0.1:1/1/q"])
    with DashboardServer(store_url, []) as server:
        driver.get(server.url + "/jobs")
        loaded(driver)
        before = text(driver, "#page-info")
        # When the operator asks for failed solve_route jobs (the form is not redrawn: only the table is)
        Select(css(driver, "select[name=status]")[0]).select_by_visible_text("failed")
        css(driver, "input[name=task]")[0].send_keys("solve_route")
        click(driver, "#apply")
        # Then only those are listed, and the address says so (a link to share)
        until(driver, lambda d: text(d, "#page-info") != before, "the filtered page")
        found = rows(driver)
        assert found and all(cells[2] == "solve_route" for _, cells in found)
        assert all(cells[6] in ("failed", "timed out") for _, cells in found)
        assert "status=failed" in driver.current_url and "task=solve_route" in driver.current_url


def test_paginating_walks_every_job_once_and_back(driver, store, store_url):
    fill(store, 230, time.time(), ["http://127.0.0.1:1/1/q"], running=0)
    with DashboardServer(store_url, []) as server:
        driver.get(server.url + "/jobs")
        loaded(driver)
        pages = []
        while True:
            info = text(driver, "#page-info")
            pages.append([message_id for message_id, _ in rows(driver)])
            if enabled(driver, "#next") != [True]:
                break
            click(driver, "#next")
            until(driver, lambda d, info=info: text(d, "#page-info") != info, "the next page")
        seen = [i for page in pages for i in page]
        assert len(pages) == 5 and len(seen) == len(set(seen)) == 230
        assert text(driver, "#page-info").endswith("rows 201–230 of 230")
        click(driver, "#prev")
        until(driver, lambda d: text(d, "#page-info").startswith("page 4"), "the page before")
        assert [message_id for message_id, _ in rows(driver)] == pages[3]


def test_kill_a_running_task_and_see_it_stop(driver, store, store_url, make_queue, sqs_client, worker):
    # Given a real `sqsmaster worker --store` running a task that would nap for a minute
    url = make_queue(dead_letter=True, max_receive_count=5)
    message_id = submit(sqs_client, url, "nap", id="long", seconds=60)
    run = worker(url, "--store", store_url, "--max-tasks", "1")
    wait_for(lambda: store.attempts(JobFilter(status="running", message_id=message_id), time.time()).rows, 30,
             "the task to show running in the store")
    with DashboardServer(store_url, [url]) as server:
        driver.get(server.url + "/running")
        loaded(driver)
        until(driver, lambda d: [i for i, _ in rows(d)] == [message_id], "the running row")
        # When the operator clicks Kill and confirms
        click(driver, f"tr[data-message-id='{message_id}'] button[data-action=kill]")
        confirm(driver, "Kill 1 running task")
        # Then the task stops at a heartbeat tick (1 s here), and the worker exits (--max-tasks 1, 0: as asked)
        assert run.wait(timeout=30) == 0, run.stderr
        [killed] = store.attempts_of(message_id)
        assert (killed.outcome, killed.action) == ("killed", "dead-lettered") and killed.runtime < 30
        # And the Running view lists it no more; its page says killed; the audit trail has the order
        until(driver, lambda d: not rows(d), "the row to leave Running")
        driver.get(f"{server.url}/jobs/{message_id}")
        loaded(driver)
        assert "killed" in text(driver, "section.attempt h3")
    assert [(a.what, a.target) for a in store.actions()] == [("kill", message_id)]


def test_requeue_a_failure_group(driver, store, store_url, make_queue, sqs_client):
    url = make_queue()
    now = time.time()
    for i in range(3):
        store.put_attempt(AttemptRow(f"m{i}", 3, "solve_route", url, "h", 1, now - 100 + i, kwargs=json.dumps({"n": i}),
                                     ended=now - 90 + i, outcome="failed", action="dead-lettered",
                                     exception="ValueError: infeasible", traceback="Traceback\nValueError: infeasible"))
    with DashboardServer(store_url, [url]) as server:
        driver.get(server.url + "/failures")
        loaded(driver)
        click(driver, "tr[data-group='solve_route x ValueError'] button[data-action=requeue]")
        confirm(driver, "Requeue 3 message(s) of solve_route x ValueError")
        until(driver, lambda d: "requeue: 3 done" in text(d, "#notice"), "the result")
    sent = sorted(json.loads(m["Body"])["kwargs"]["n"] for m in receive_all(sqs_client, url))
    assert sent == [0, 1, 2]


def test_redrive_all_dead_letters(driver, store, store_url, make_queue, sqs_client):
    url = make_queue(dead_letter=True)
    dlq = make_queue.dead_letter_urls[url]
    now = time.time()
    for i in range(2):
        message_id = sqs_client.send_message(QueueUrl=dlq, MessageBody=json.dumps({"task": "t", "kwargs": {"n": i}}))
        store.put_attempt(AttemptRow(message_id["MessageId"], 3, "t", url, "h", 1, now - 50 + i, ended=now - 40 + i,
                                     outcome="failed", action="dead-lettered", exception="KeyError: 'x'"))
    with DashboardServer(store_url, [url]) as server:
        driver.get(server.url + "/dead-letters")
        loaded(driver)
        click(driver, "#redrive-all")
        confirm(driver, "Redrive 2 message(s)")
        until(driver, lambda d: "redrive:" in (text(d, "#notice") or ""), "the result")
        assert "redrive: 2 done" in text(driver, "#notice"), text(driver, "#notice")
        until(driver, lambda d: not rows(d), "the list to empty")
    assert len(receive_all(sqs_client, url)) == 2 and not receive_all(sqs_client, dlq)


def test_read_only_disables_every_action_and_the_server_refuses_them(driver, store, store_url):
    fill(store, 100, time.time(), ["http://127.0.0.1:1/1/q"])
    with DashboardServer(store_url, [], "--read-only") as server:
        for view, selector in (("running", "button[data-action=kill]"), ("failures", "button[data-action=requeue]"),
                               ("dead-letters", "button[data-action=redrive]")):
            driver.get(f"{server.url}/{view}")
            loaded(driver)
            buttons = enabled(driver, selector)
            assert buttons and not any(buttons), view
        assert text(driver, "#read-only") == "read-only"
        # A POST made from the page itself, token and all, is refused too
        status = driver.execute_async_script("""
            const done = arguments[arguments.length - 1];
            fetch('/api/actions/kill', {method: 'POST', headers: {'Content-Type': 'application/json',
                'X-Sqsmaster-Csrf': document.querySelector('meta[name=csrf-token]').content},
                body: JSON.stringify({message_ids: ['run-0000']})}).then(r => done(r.status));""")
        assert status == 403
    running = store.attempts(JobFilter(status="running"), time.time()).rows
    assert running and store.flags([r.message_id for r in running]) == {} and store.actions() == []


def test_a_store_filled_by_real_workers_shows_their_jobs_failures_and_dead_letters(driver, store, store_url,
                                                                                  make_queue, sqs_client, worker):
    # Given a real worker that drained three tasks that succeed and two that fail for good, recording to the store
    url = make_queue(dead_letter=True, max_receive_count=1)
    dlq = make_queue.dead_letter_urls[url]
    [submit(sqs_client, url, "note", id=f"ok{index}") for index in range(3)]
    failed = {submit(sqs_client, url, "fail_no_retry", id=f"bad{index}") for index in range(2)}
    run = worker(url, "--store", store_url, "--until-empty")
    assert run.wait(timeout=60) == 0, run.stderr
    with DashboardServer(store_url, [url]) as server:
        # Then the Jobs view lists the five attempts (a last failure is recorded as dead-lettered), the failures
    # their group, the dead letters both
        driver.get(server.url + "/jobs")
        loaded(driver)
        assert sorted(cells[6] for _, cells in rows(driver)) == ["dead-lettered"] * 2 + ["succeeded"] * 3
        driver.get(server.url + "/failures")
        loaded(driver)
        [(_, cells)] = rows(driver, "tr[data-group]")
        assert cells[:4] == ["fail_no_retry", "RuntimeError", "2", "2"]
        driver.get(server.url + "/dead-letters")
        loaded(driver)
        assert {message_id for message_id, _ in rows(driver)} == failed
        # When both are redriven: SQS's redrive policy moved them to the DLQ under their own ids, found there
        click(driver, "#redrive-all")
        confirm(driver, "Redrive 2 message(s)")
        until(driver, lambda d: "redrive:" in (text(d, "#notice") or ""), "the result")
        assert "redrive: 2 done" in text(driver, "#notice"), text(driver, "#notice")
    bodies = sorted(json.loads(m["Body"])["kwargs"]["id"] for m in receive_all(sqs_client, url))
    assert bodies == ["bad0", "bad1"] and not receive_all(sqs_client, dlq)
