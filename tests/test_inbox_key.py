"""The lab feed inbox's idempotency key: one indexed column (io.store.inbox_key), filled in for messages a
store held before the column existed, so a resend of such a message is still recognised."""

from __future__ import annotations

from pathlib import Path

import pytest
from feed_helpers import oru
from hypothesis import given
from hypothesis import strategies as st

from leukowatch.io import store
from leukowatch.service.inbox import classify, store_arrivals


@given(st.tuples(st.text(), st.text(), st.text()), st.tuples(st.text(), st.text(), st.text()))
def test_distinct_triples_never_share_a_key(a: tuple[str, str, str], b: tuple[str, str, str]) -> None:
    assert (store.inbox_key(*a) == store.inbox_key(*b)) == (a == b)


def test_a_separator_inside_a_part_does_not_collide() -> None:
    assert store.inbox_key("LAB1:", "X", "h") != store.inbox_key("LAB", "1:X", "h")


def _older_store(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store at schema 4 (before the key column) holding one stored message."""
    with monkeypatch.context() as m:
        m.setattr(store, "MIGRATIONS", store.MIGRATIONS[:4])
        m.setattr(store, "SCHEMA_VERSION", 4)
        con = store.open_store(path)
        store_row = classify(oru("OLD-1"))
        h = store_row.header
        con.execute("INSERT INTO feed_inbox (control_id, sending_app, sending_facility, content_sha256, raw, "
                    "received_at, status, ack_code) VALUES (?, ?, ?, ?, ?, now(), 'stored', 'AA')",
                    [h.control_id, h.sending_app, h.sending_facility, store_row.content_sha256, store_row.raw])
        con.close()


def test_upgrade_fills_the_key_and_a_resend_of_an_old_message_is_not_stored_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "store.duckdb"
    _older_store(db, monkeypatch)
    con = store.open_store(db)
    assert store.schema_version(con) == store.SCHEMA_VERSION
    old = classify(oru("OLD-1"))
    assert con.execute("SELECT dedup_key FROM feed_inbox").fetchall() == [(store.inbox_key(*old.key),)]
    # the same message again, a new one, and the new one twice in one batch
    assert store_arrivals(con, [old, classify(oru("NEW-1")), classify(oru("NEW-1"))]) == [False, True, False]
    assert con.execute("SELECT count(*), count(DISTINCT dedup_key) FROM feed_inbox").fetchone() == (2, 2)
    # same MSH-10 with other content is another message (a correction), stored
    assert store_arrivals(con, [classify(oru("NEW-1", anc=0.4))]) == [True]
    indexes = con.execute("SELECT index_name FROM duckdb_indexes() WHERE table_name = 'feed_inbox'").fetchall()
    assert ("feed_inbox_dedup_key",) in indexes
