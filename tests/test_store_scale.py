"""The job store at a fleet's size: a page of 50 among 20,000 rows, on every store.

In a file of its own so pytest-xdist runs it beside the contract suite: filling moto's
DynamoDB with 20,000 rows takes tens of seconds (moto, not DynamoDB, is slow at it).
"""

from __future__ import annotations

import pytest

from sqsmaster.store import AttemptRow, JobFilter, open_store

NOW = 1_800_000_000.0
ROWS = 20_000


def fill(store, rows: list[AttemptRow]) -> None:
    """Write rows in bulk where the store can (DynamoDB's BatchWriteItem), else one by one."""
    bulk = getattr(store, "put_attempts", None)
    if bulk is not None:
        bulk(rows)
    else:
        for row in rows:
            store.put_attempt(row)


@pytest.mark.slow
@pytest.mark.timeout(400)  # filling moto with 20,000 rows on a loaded 2-core machine: over a minute
@pytest.mark.parametrize("kind", ["sqlite", "dynamodb"])
def test_a_page_of_50_among_20000_rows_is_the_newest_50_and_a_rare_filter_still_fills_its_page(kind, make_store_url):
    # Given 20,000 finished attempts, one in 21 a failure of task "rare", and a few still running
    url = make_store_url(kind)
    # moto's Query walks all 20,000 items in Python on every call: seconds on a loaded machine, past the 5 s read
    # timeout meant for DynamoDB (which answers in milliseconds); the store's bound is not what is tested here
    store = open_store(url + "&read_timeout=60" if kind == "dynamodb" else url)
    rows = [AttemptRow(f"m{i:05d}", 1, "rare" if i % 21 == 0 else "common", "https://q/1", "h1", 7, NOW + i,
                       lease=60.0, outcome=None if i % 5000 == 1 else "failed" if i % 21 == 0 else "succeeded",
                       ended=None if i % 5000 == 1 else NOW + i + 1) for i in range(ROWS)]
    fill(store, rows)
    # When the newest page, and the one after it, are read
    first = store.attempts(JobFilter(), NOW + ROWS, limit=50)
    second = store.attempts(JobFilter(), NOW + ROWS, limit=50, cursor=first.cursor)
    # Then they are the 100 newest rows, in order, whole (not just the listed attributes)
    assert [r.message_id for r in first.rows + second.rows] == [f"m{i:05d}" for i in range(ROWS - 1, ROWS - 101, -1)]
    assert all(r.lease == 60.0 for r in first.rows)
    # And a filter that matches one row in 21 still fills a page of 50 (about 1,000 rows read to find them)
    rare = store.attempts(JobFilter(task="rare", status="failed"), NOW + ROWS, limit=50)
    expected = [f"m{i:05d}" for i in range(ROWS - 1, -1, -1) if i % 21 == 0][:50]
    assert [r.message_id for r in rare.rows] == expected and rare.cursor is not None
    # And the running rows are found without walking the 20,000
    running = store.attempts(JobFilter(status="running"), NOW + 10, limit=50)
    assert [r.message_id for r in running.rows] == ["m15001", "m10001", "m05001", "m00001"]
    store.close()
