"""``sqsmaster kill`` and ``cancel`` in-process: what they set in the job store, print, and exit with."""

from __future__ import annotations

import sqlite3
import time

from sqsmaster.cli import main
from sqsmaster.store import AttemptRow, open_store


def test_kill_of_a_message_not_running_sets_the_order_and_warns_that_it_waits(tmp_path, capsys, monkeypatch):
    url = f"sqlite:///{tmp_path}/jobs.db"
    open_store(url).close()
    monkeypatch.setenv("SQSMASTER_STORE", url)
    assert main(["kill", "m-1", "--then", "delete"]) == 0
    captured = capsys.readouterr()
    assert "kill ordered: message m-1 by " in captured.out and "then it is deleted" in captured.out
    assert "warning: the job store shows no running attempt of message m-1" in captured.err
    store = open_store(url, create=False)
    flag = store.flags(["m-1"])["m-1"]
    assert (flag.kind, flag.then, flag.done) == ("kill", "delete", None) and "@" in flag.who
    [action] = store.actions()
    assert (action.what, action.target, action.detail) == ("kill", "m-1", "then delete")
    store.close()


def test_cancel_of_a_running_message_warns_that_kill_is_what_stops_it(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/jobs.db"
    store = open_store(url)
    now = time.time()
    store.put_attempt(AttemptRow("m-2", 1, "solve", "https://q/1", "h1", 7, now, lease=60.0, last_heartbeat=now))
    store.close()
    assert main(["cancel", "m-2", "--store", url]) == 0
    captured = capsys.readouterr()
    assert "cancel ordered: message m-2" in captured.out
    assert "message m-2 is running now (attempt 1 on h1:7)" in captured.err


def test_orders_need_a_store_that_exists(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SQSMASTER_STORE", raising=False)
    assert main(["kill", "m-3"]) == 2
    assert "no job store: give --store URL or set SQSMASTER_STORE" in capsys.readouterr().err
    assert main(["cancel", "m-3", "--store", f"sqlite:///{tmp_path}/none.db"]) == 3
    assert "does not exist" in capsys.readouterr().err
    assert main(["kill", "m-3", "--then", "explode", "--store", f"sqlite:///{tmp_path}/none.db"]) == 2
    assert "invalid choice: 'explode'" in capsys.readouterr().err


def _refuse_writes_to(path, table: str) -> None:
    """Make the sqlite store refuse every new row of ``table``, as a full disk or a broken store would."""
    connection = sqlite3.connect(path)
    connection.execute(f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} "
                       "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END")
    connection.commit()
    connection.close()


def test_an_order_the_store_cannot_audit_is_not_given(tmp_path, capsys):
    # Given a store that cannot take the audit row (who ordered what)
    path = tmp_path / "jobs.db"
    url = f"sqlite:///{path}"
    open_store(url).close()
    _refuse_writes_to(path, "actions")
    # When an operator orders a kill, Then it fails with the store's error (exit 3) and sets no order:
    # no worker ever obeys an order that no one can see was given
    assert main(["kill", "m-4", "--store", url]) == 3
    assert "disk is full" in capsys.readouterr().err
    store = open_store(url, create=False)
    assert store.flags(["m-4"]) == {}
    store.close()


def test_an_order_the_store_cannot_set_stays_in_the_audit_trail(tmp_path, capsys):
    # Given a store that takes the audit row and then fails to set the flag
    path = tmp_path / "jobs.db"
    url = f"sqlite:///{path}"
    open_store(url).close()
    _refuse_writes_to(path, "flags")
    # When an operator orders a cancel, Then it fails (exit 3) and the audit trail shows the attempt
    assert main(["cancel", "m-5", "--store", url]) == 3
    assert "disk is full" in capsys.readouterr().err
    store = open_store(url, create=False)
    assert store.flags(["m-5"]) == {}
    assert [(action.what, action.target) for action in store.actions()] == [("cancel", "m-5")]
    store.close()
