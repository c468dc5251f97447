"""The embedded store: one DuckDB file holding what `leukowatch ingest` read, with provenance.

Why a store: a single message is one blood count, but chronicity, episodes and drug associations
need a person's history. History, the service and the population engine all read this file, so its
schema lives here, in one place, versioned by numbered migrations (`schema_migrations`); opening a
store applies the pending ones, so an old file keeps working after an upgrade.

Public API (small on purpose; other rooms build on it):

- `default_db_path()` -> Path: `$LEUKOWATCH_DB`, else `$XDG_DATA_HOME/leukowatch/leukowatch.duckdb`,
  else `~/.local/share/leukowatch/leukowatch.duckdb`.
- `open_store(path=None, read_only=False)` -> duckdb connection with the schema up to date.
- `data_stamp(con)` -> a tuple that changes when the clinical data does (not with audit rows).
- `list_patients(con)` -> list of dicts (patient_id, sex, birth_date, n_observations, first, last).
- `load_patient_request(con, patient_id)` -> the project JSON request dict (every stored
  observation as history, medications with dates, chemotherapy dose dates, conditions, patient),
  ready for `leukowatch.assess.assess`.
- `write_result(con, result, file, sha256, fmt)` -> `IngestSummary`: stores one `ReadResult` in
  one transaction (nothing partial on failure) and is idempotent (observation ids are a stable hash
  of provenance + content; a file whose sha256 was ingested before is skipped whole). The sha256
  check runs inside that transaction. `write_result_in_transaction` is the same without
  BEGIN/COMMIT, for a caller that owns the transaction (the service's one writer).
- `StoreBusy` (an InputError): the file is locked by another process; names that process.
  `open_store` raises it; `busy_error(exc)` turns a DuckDB lock error raised elsewhere into it.
- With `reject_future=True` (the service and the lab feed), results dated more than `FUTURE_SKEW`
  after the time of writing become rejects with a reason. Off for files and the demo, whose
  synthetic series may run past today.
- `save_assessment(con, patient_id, assessment_dict, profile, criteria)`.
- `store_request(con, request_dict, source)` -> `IngestSummary`: a project JSON request (with
  duffy_null and chemotherapy dose dates) stored as history, through the same path as ingest.

Values are stored in canonical units (10^9/L for counts; `percent` marks a differential in %), so
SQL over the table never has to know how a lab spelled its unit; `original_unit` keeps that spelling.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from ..model import InputError, Observation
from ..request import FUTURE_SKEW, in_the_future

if TYPE_CHECKING:
    from .result import ReadResult, Reject, Temperature

# ---------------------------------------------------------------------------------------------
# Location


def default_db_path() -> Path:
    """Where the store lives unless `--db` says otherwise (XDG data directory convention)."""
    env = os.environ.get("LEUKOWATCH_DB")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / "leukowatch" / "leukowatch.duckdb"


class StoreBusy(InputError):
    """The store file is locked by another process (DuckDB allows one writing process per file).

    Retryable: the service answers 503 with Retry-After, the CLI one line and exit 2. `holder` is
    the process DuckDB names in its lock error (e.g. "PID 1234, /usr/bin/python3"), when it does.
    """

    def __init__(self, path: str, holder: str | None) -> None:
        who = f"another process ({holder})" if holder else "another process"
        super().__init__(path, f"the store is in use by {who}; retry when it has finished")
        self.path, self.holder = path, holder


_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (?P<exe>\S+) \(PID (?P<pid>\d+)\)")


def busy_error(exc: BaseException, path: str | os.PathLike[str] | None = None) -> StoreBusy | None:
    """A StoreBusy for DuckDB's "Could not set lock on file" error, None for any other error."""
    text = str(exc)
    if "Could not set lock" not in text and "Conflicting lock" not in text:
        return None
    m = _LOCK_HOLDER.search(text)
    holder = f"PID {m.group('pid')}, {m.group('exe')}" if m else None
    where = re.search(r'lock on file "([^"]+)"', text)
    return StoreBusy(str(path) if path is not None else (where.group(1) if where else "store"), holder)


# ---------------------------------------------------------------------------------------------
# Schema, as numbered migrations. Never edit a released migration: add the next number.


def _m1_initial(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("""
        CREATE TABLE patients (
            patient_id VARCHAR PRIMARY KEY, sex VARCHAR, birth_date DATE, age_years DOUBLE,
            duffy_null BOOLEAN DEFAULT FALSE, source VARCHAR);
        CREATE TABLE observations (
            obs_id VARCHAR PRIMARY KEY, patient_id VARCHAR NOT NULL, time TIMESTAMPTZ, analyte VARCHAR NOT NULL,
            value DOUBLE NOT NULL, unit VARCHAR NOT NULL, percent BOOLEAN NOT NULL, comparator VARCHAR,
            ref_low DOUBLE, ref_high DOUBLE, loinc VARCHAR, original_unit VARCHAR, lab_flag VARCHAR,
            status VARCHAR, source_file VARCHAR, source_id VARCHAR, source_line INTEGER, ingest_id VARCHAR);
        CREATE INDEX observations_patient ON observations (patient_id, analyte, time);
        CREATE TABLE medications (
            patient_id VARCHAR NOT NULL, name VARCHAR NOT NULL, start DATE, stop DATE, source VARCHAR);
        CREATE TABLE chemotherapy (
            patient_id VARCHAR NOT NULL, dose_date DATE NOT NULL, regimen VARCHAR, source VARCHAR);
        CREATE TABLE conditions (patient_id VARCHAR NOT NULL, name VARCHAR NOT NULL, source VARCHAR);
        CREATE TABLE assessments (
            patient_id VARCHAR NOT NULL, assessed_at TIMESTAMPTZ NOT NULL, profile VARCHAR, criteria VARCHAR,
            json VARCHAR NOT NULL);
        CREATE TABLE ingests (
            ingest_id VARCHAR PRIMARY KEY, file VARCHAR, sha256 VARCHAR, format VARCHAR, read INTEGER,
            accepted INTEGER, rejected INTEGER, ingested_at TIMESTAMPTZ);
        CREATE TABLE rejects (
            ingest_id VARCHAR, file VARCHAR, locator VARCHAR, reason VARCHAR, raw VARCHAR);
    """)


def _m2_tokens_audit(con: duckdb.DuckDBPyConnection) -> None:
    """API tokens (only a SHA-256 of each token is kept) and the append-only access audit.

    The audit holds who did what to which patient and how it ended, never a value: it is itself
    a record a wide group (auditors) reads. Nothing in leukowatch updates or deletes its rows.
    """
    con.execute("""
        CREATE TABLE api_tokens (
            name VARCHAR PRIMARY KEY, role VARCHAR NOT NULL, token_sha256 VARCHAR NOT NULL UNIQUE,
            created_at TIMESTAMPTZ NOT NULL, expires_at TIMESTAMPTZ, revoked_at TIMESTAMPTZ);
        CREATE SEQUENCE audit_seq;
        CREATE TABLE audit (
            seq BIGINT PRIMARY KEY DEFAULT nextval('audit_seq'), time TIMESTAMPTZ NOT NULL,
            actor VARCHAR NOT NULL, role VARCHAR, kind VARCHAR, action VARCHAR NOT NULL, patient_id VARCHAR,
            endpoint VARCHAR, outcome VARCHAR NOT NULL);
        CREATE INDEX audit_patient ON audit (patient_id, time);
    """)


def _m3_lab_feed(con: duckdb.DuckDBPyConnection) -> None:
    """The real-time lab feed (service/mllp.py): the durable inbox, the worklist, notifications.

    `feed_inbox` holds every MLLP message as received, written before its ACK is sent, so an ACK'd
    message survives a crash; the unique key (facility, MSH-10, content hash) makes a resend a no-op.
    Its rows are never updated but for a judging error: `feed_progress` is the highest inbox id
    judged (messages are judged in arrival order), and DuckDB rewrites a row whose indexed column
    changes. Status columns elsewhere are not indexed for the same reason.
    `feed_alert_state` is each person's alert set at the latest judged result, so only alerts that
    result did not already have become `worklist` items. `notify_outbox` is delivered by the
    notifier; a notice that failed its last try moves to `notify_dead_letter`, never vanishes.
    """
    con.execute("""
        CREATE SEQUENCE feed_inbox_seq;
        CREATE TABLE feed_inbox (
            inbox_id BIGINT PRIMARY KEY DEFAULT nextval('feed_inbox_seq'), control_id VARCHAR NOT NULL,
            sending_app VARCHAR NOT NULL, sending_facility VARCHAR NOT NULL, content_sha256 VARCHAR NOT NULL,
            raw VARCHAR NOT NULL, received_at TIMESTAMPTZ NOT NULL, status VARCHAR NOT NULL,
            ack_code VARCHAR NOT NULL, error VARCHAR, patient_id VARCHAR,
            UNIQUE (sending_facility, control_id, content_sha256));
        CREATE TABLE feed_progress (judged_upto BIGINT NOT NULL);
        INSERT INTO feed_progress VALUES (0);
        CREATE TABLE feed_alert_state (
            patient_id VARCHAR PRIMARY KEY, alerts VARCHAR NOT NULL, inbox_id BIGINT, updated_at TIMESTAMPTZ);
        CREATE SEQUENCE worklist_seq;
        CREATE TABLE worklist (
            item_id BIGINT PRIMARY KEY DEFAULT nextval('worklist_seq'), patient_id VARCHAR NOT NULL,
            code VARCHAR NOT NULL, level VARCHAR NOT NULL, message VARCHAR NOT NULL, result_time TIMESTAMPTZ,
            received_at TIMESTAMPTZ NOT NULL, inbox_id BIGINT NOT NULL, created_at TIMESTAMPTZ NOT NULL,
            status VARCHAR NOT NULL, acked_by VARCHAR, acked_at TIMESTAMPTZ,
            UNIQUE (inbox_id, code, level));
        CREATE SEQUENCE notify_seq;
        CREATE TABLE notify_outbox (
            notice_id BIGINT PRIMARY KEY DEFAULT nextval('notify_seq'), item_id BIGINT NOT NULL,
            channel VARCHAR NOT NULL, target VARCHAR NOT NULL, payload VARCHAR NOT NULL, status VARCHAR NOT NULL,
            attempts INTEGER NOT NULL, next_attempt_at TIMESTAMPTZ NOT NULL, last_error VARCHAR,
            created_at TIMESTAMPTZ NOT NULL, sent_at TIMESTAMPTZ);
        CREATE TABLE notify_dead_letter (
            notice_id BIGINT PRIMARY KEY, item_id BIGINT NOT NULL, channel VARCHAR NOT NULL, target VARCHAR NOT NULL,
            payload VARCHAR NOT NULL, attempts INTEGER NOT NULL, last_error VARCHAR, died_at TIMESTAMPTZ NOT NULL);
    """)


def _m4_temperatures(con: duckdb.DuckDBPyConnection) -> None:
    """Measured body temperatures (°C): the population screen pairs them with a same-day ANC for febrile
    neutropenia, so a screen of the store finds what a screen of the files it was loaded from finds."""
    con.execute("""CREATE TABLE temperatures (patient_id VARCHAR NOT NULL, time TIMESTAMPTZ NOT NULL,
                   temperature_c DOUBLE NOT NULL, source VARCHAR)""")


def inbox_key(sending_facility: str, control_id: str, content_sha256: str) -> str:
    """The lab feed inbox's idempotency key (sending facility, MSH-10, content hash) as one string.

    One indexed column, because DuckDB answers a batch's lookup of three-column keys (an OR of
    equalities) by scanning the whole inbox: 240 ms per batch of 200 at 1M messages, against 5 ms for
    an IN list on one indexed column (measured on DuckDB 2.0), and the inbox only grows. Each part
    is prefixed by its length in bytes, so no two triples share a key, whatever they contain.
    """
    return (f"{len(sending_facility.encode())}:{sending_facility}"
            f"{len(control_id.encode())}:{control_id}{content_sha256}")


def _m5_inbox_key(con: duckdb.DuckDBPyConnection) -> None:
    """`feed_inbox.dedup_key` (`inbox_key`), filled in for the messages already stored by the same Python
    function the feed uses, so old and new rows can never disagree. Its index is the next migration:
    DuckDB creates no index in a transaction that updated rows."""
    con.execute("ALTER TABLE feed_inbox ADD COLUMN dedup_key VARCHAR")
    con.create_function("lw_inbox_key", inbox_key, ["VARCHAR", "VARCHAR", "VARCHAR"], "VARCHAR")
    try:
        con.execute("UPDATE feed_inbox SET dedup_key = lw_inbox_key(sending_facility, control_id, content_sha256)")
    finally:
        con.remove_function("lw_inbox_key")


def _m6_inbox_key_index(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE UNIQUE INDEX feed_inbox_dedup_key ON feed_inbox (dedup_key)")


#: (number, description, function). `open_store` applies those above the file's recorded version.
#: Reserved: 3 for the lab feed (inbox/worklist), 4 for the population engine.
MIGRATIONS: tuple[tuple[int, str, Callable[[duckdb.DuckDBPyConnection], None]], ...] = (
    (1, "initial schema", _m1_initial),
    (2, "api tokens and access audit", _m2_tokens_audit),
    (3, "lab feed inbox, worklist, notifications", _m3_lab_feed),
    (4, "measured temperatures", _m4_temperatures),
    (5, "lab feed inbox: one idempotency key column", _m5_inbox_key),
    (6, "lab feed inbox: the idempotency key's index", _m6_inbox_key_index),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]


def schema_version(con: duckdb.DuckDBPyConnection) -> int:
    row = con.execute("SELECT max(version) FROM schema_migrations").fetchone()
    return int(row[0] or 0) if row else 0


def open_store(path: str | os.PathLike[str] | None = None, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open (creating if needed) the store and bring its schema up to date.

    Each migration runs in its own transaction together with its `schema_migrations` row, so a
    crash mid-upgrade leaves the file at the previous version, never half-migrated.
    """
    db = Path(path) if path is not None else default_db_path()
    if read_only:
        if not db.exists():
            raise InputError(str(db), "no leukowatch store at this path (run `leukowatch ingest` first)")
        try:
            con = duckdb.connect(str(db), read_only=True)
        except duckdb.Error as exc:
            raise (busy_error(exc, db) or InputError(str(db), f"cannot open the store: {exc}")) from None
        if schema_version(con) < SCHEMA_VERSION:
            raise InputError(str(db), "store schema is older than this leukowatch; open it once read-write")
        return con
    # A new store and a new folder for it are private to this user: the file holds patient results.
    db.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    new = not db.exists()
    try:
        con = duckdb.connect(str(db))
    except duckdb.Error as exc:
        raise (busy_error(exc, db) or InputError(str(db), f"cannot open the store: {exc}")) from None
    if new and db.exists():
        db.chmod(0o600)
    con.execute("SET TimeZone = 'UTC'")
    con.execute("""CREATE TABLE IF NOT EXISTS schema_migrations (
        version INTEGER PRIMARY KEY, description VARCHAR, applied_at TIMESTAMPTZ)""")
    current = schema_version(con)
    for number, description, migrate in MIGRATIONS:
        if number <= current:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            migrate(con)
            con.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)",
                        [number, description, datetime.now(UTC)])
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
    return con


# ---------------------------------------------------------------------------------------------
# Writing


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def observation_id(obs: Observation, source_key: str) -> str:
    """Stable id from provenance + content: the same result from the same message/bundle/file row
    always gets the same id, so re-ingesting it is a no-op (INSERT OR IGNORE)."""
    parts = [source_key, obs.patient_id or "", obs.analyte, repr(round(obs.value, 9)), str(obs.percent),
             obs.time.isoformat() if obs.time else "", obs.comparator or ""]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


@dataclass
class IngestSummary:
    file: str
    ingest_id: str
    format: str
    read: int
    accepted: int
    rejected: int
    stored: int  # new observation rows (0 when everything was already in the store)
    skipped_file: bool = False  # same sha256 ingested before
    #: Every reject of this write: the reader's and the store's own (no patient id, dated in the future).
    rejects: tuple[Any, ...] = ()




def write_result(con: duckdb.DuckDBPyConnection, result: ReadResult, file: str, sha256: str,
                 fmt: str, reject_future: bool = False) -> IngestSummary:
    """Store one file's read result atomically (one transaction, the sha256 check inside it)."""
    con.execute("BEGIN TRANSACTION")
    try:
        summary = write_result_in_transaction(con, result, file, sha256, fmt, reject_future)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return summary


def write_result_in_transaction(con: duckdb.DuckDBPyConnection, result: ReadResult, file: str, sha256: str,
                                fmt: str, reject_future: bool = False) -> IngestSummary:
    """`write_result` for a caller that has begun the transaction. Observations without a patient
    id or without a time, dated before the birth date the message gives, and (with `reject_future`) those dated
    beyond `FUTURE_SKEW`, become rejects here (a store
    row must belong to someone and have happened at a known time: an undated row in a history was read as
    part of the latest draw, so an old low count showed as the current one), so `read == accepted + rejected`
    still holds."""
    prior = con.execute("SELECT ingest_id FROM ingests WHERE sha256 = ?", [sha256]).fetchone()
    if prior:
        return IngestSummary(file, prior[0], fmt, result.read, result.accepted, result.rejected, 0, True)
    from .result import Reject

    now = datetime.now(UTC)
    ingest_id = hashlib.sha256(f"{sha256}\x1f{now.isoformat()}".encode()).hexdigest()[:16]
    rejects = list(result.rejects)
    born = birth_dates(result)
    limit = now if reject_future else None
    keep: list[tuple[Observation, str, str | None, int | None, str | None]] = []
    for item in result.items:
        o = item.observation
        reason = store_refusal(o.patient_id, o.time, born.get(o.patient_id or ""), limit)
        if reason is not None:
            rejects.append(Reject(item.locator, reason, "", "invalid"))
            continue
        keep.append((o, item.source_key, item.source_id, item.line, item.status))
    accepted = len(keep)
    temperatures, unusable = _storable_temperatures(result, born, limit)
    rejects += unusable  # read by the reader as facts, not records: each refused one counted as one read here
    before = _count(con, "observations")
    # A person is created (or their facts updated) only with a result stored for them: a message whose every
    # result was refused, or that holds only temperatures (kept for the person's draws, as medicines are),
    # leaves no patient without results in the store's list, whose page would have nothing to show.
    owners = {str(o.patient_id) for o, *_ in keep}
    upserted = {p.id for p in result.patients if p.id in owners}
    _upsert_patients(con, [p for p in result.patients if p.id in owners], file)
    _bulk_insert(con, "patients", ["patient_id", "source"],  # people named only by their results
                 [[pid, file] for pid in sorted(owners - upserted)])
    _bulk_insert(con, "observations", _OBSERVATION_COLUMNS,
                 [[observation_id(o, key), o.patient_id, o.time, o.analyte, o.value, o.unit, o.percent,
                   o.comparator, o.reference_range.low if o.reference_range else None,
                   o.reference_range.high if o.reference_range else None,
                   o.code, o.original_unit, o.lab_flag, status, file, sid, line, ingest_id]
                  for o, key, sid, line, status in keep])
    stored = _count(con, "observations") - before
    _insert_new(con, "medications", ["patient_id", "name", "start", "stop"],
                [[pid, med.name, med.start, med.stop] for pid, med in result.medications], file)
    _insert_new(con, "chemotherapy", ["patient_id", "dose_date", "regimen"],
                [list(dose) for dose in _chemotherapy_doses(result)], file)
    _insert_new(con, "conditions", ["patient_id", "name"], [list(c) for c in result.conditions], file)
    _insert_new(con, "temperatures", ["patient_id", "time", "temperature_c"],
                [[t.patient_id, t.time, t.celsius] for t in temperatures], file)
    con.execute("INSERT INTO ingests VALUES (?,?,?,?,?,?,?,?)",
                [ingest_id, file, sha256, fmt, result.read + len(unusable), accepted, len(rejects), now])
    if rejects:
        con.executemany("INSERT INTO rejects VALUES (?,?,?,?,?)",
                        [[ingest_id, file, r.locator, r.reason, r.raw[:2000]] for r in rejects])
    return IngestSummary(file, ingest_id, fmt, result.read + len(unusable), accepted, len(rejects), stored,
                         rejects=tuple(rejects))


def birth_dates(result: ReadResult) -> dict[str, date]:
    """The birth date each person of a read result gives (people without one left out)."""
    return {p.id: p.birth_date for p in result.patients if p.id and p.birth_date}


def store_refusal(patient_id: str | None, when: datetime | None, birth: date | None,
                  now: datetime | None) -> str | None:
    """Why the store will not keep a result or temperature (None: it keeps it). One rule for the
    store, the lab feed's ACK and its judge, so what is acknowledged and judged is what is stored: it
    must belong to someone, have happened at a known time, not before the person's birth (the
    history's assessment would refuse the whole person) and, when `now` is given, not beyond
    `FUTURE_SKEW` after it (a wrong clock or a forgery would sort after every real result)."""
    if not patient_id:
        return "no patient identifier: cannot store it in a history"
    if when is None:
        return "no observation time: cannot place it in a history"
    if birth is not None and when.date() < birth:
        return f"dated {when.date().isoformat()}, before the patient's birth date {birth.isoformat()}"
    if now is not None and in_the_future(when, now):
        return (f"dated {when.isoformat()}, in the future beyond the allowed clock skew of "
                f"{int(FUTURE_SKEW.total_seconds())} s")
    return None


def _storable_temperatures(result: ReadResult, born: dict[str, date],
                           now: datetime | None) -> tuple[list[Temperature], list[Reject]]:
    """The result's temperatures the store keeps (by `store_refusal`), and a reject for each other."""
    from .result import Reject

    kept: list[Temperature] = []
    refused: list[Reject] = []
    for t in result.temperatures:
        if not t.patient_id:
            refused.append(Reject(t.locator, "body temperature without a patient identifier: cannot store it", "",
                                  "invalid"))
        elif (problem := store_refusal(t.patient_id, t.time, born.get(t.patient_id), now)) is not None:
            refused.append(Reject(t.locator, f"body temperature {problem}", "", "invalid"))
        else:
            kept.append(t)
    return kept, refused


_OBSERVATION_COLUMNS = ["obs_id", "patient_id", "time", "analyte", "value", "unit", "percent", "comparator",
                        "ref_low", "ref_high", "loinc", "original_unit", "lab_flag", "status", "source_file",
                        "source_id", "source_line", "ingest_id"]


#: Column types by table, for `_with_rows` (the lab feed writes small batches often).
_COLUMN_TYPES: dict[str, dict[str, str]] = {}


def _with_rows(con: duckdb.DuckDBPyConnection, table: str, columns: list[str], rows: list[list[Any]],
               sql: str) -> None:
    """Run `sql` with the rows as relation `_lw_rows` (a CTE), cast to the table's column types.

    DuckDB's executemany binds row by row and took minutes for a 100k-row file; a registered Arrow
    table makes each write one vectorised statement. A CTE rather than a temporary view created and
    dropped around it saves two statements per call: the lab feed writes small batches often, and
    each statement costs milliseconds on a busy machine.
    """
    if not rows:
        return
    import pyarrow as pa

    types = _COLUMN_TYPES.get(table)
    if types is None:  # one catalog query per table per process: every store is at SCHEMA_VERSION once opened
        types = _COLUMN_TYPES[table] = dict(con.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ?", [table]).fetchall())
    con.register("_lw_arrow", pa.table({c: [r[i] for r in rows] for i, c in enumerate(columns)}))
    try:
        con.execute("WITH _lw_rows AS (SELECT " + ", ".join(f"CAST({c} AS {types[c]}) AS {c}" for c in columns)
                    + " FROM _lw_arrow) " + sql).fetchall()  # finished before the Arrow table goes
    finally:
        con.unregister("_lw_arrow")


def _bulk_insert(con: duckdb.DuckDBPyConnection, table: str, columns: list[str], rows: list[list[Any]]) -> None:
    """INSERT OR IGNORE: rows whose primary key is already stored are skipped (idempotent ingest)."""
    cols = ", ".join(columns)
    _with_rows(con, table, columns, rows, f"INSERT OR IGNORE INTO {table} ({cols}) SELECT {cols} FROM _lw_rows")


def _insert_new(con: duckdb.DuckDBPyConnection, table: str, columns: list[str], rows: list[list[Any]],
                file: str) -> None:
    """Insert the rows not already present (compared on `columns`, NULL-safe), each once."""
    cols = ", ".join(columns)
    same = " AND ".join(f"t.{c} IS NOT DISTINCT FROM r.{c}" for c in columns)
    _with_rows(con, table, columns, rows,
               f"INSERT INTO {table} ({cols}, source) SELECT DISTINCT {cols}, '{_sql_text(file)}' FROM _lw_rows r "
               f"WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE {same})")


def _sql_text(text: str) -> str:
    return text.replace("'", "''")


def _upsert_patients(con: duckdb.DuckDBPyConnection, patients: list[Any], file: str) -> None:
    """New facts win over unknowns, never over known facts with unknowns."""
    latest = {p.id: p for p in patients}  # one row per id: an upsert may not touch a row twice
    rows = [[p.id, None if p.sex == "unknown" else p.sex, p.birth_date, p.age_years, file] for p in latest.values()]
    _with_rows(con, "patients", ["patient_id", "sex", "birth_date", "age_years", "source"], rows, """
        INSERT INTO patients (patient_id, sex, birth_date, age_years, source)
        SELECT patient_id, sex, birth_date, age_years, source FROM _lw_rows
        ON CONFLICT (patient_id) DO UPDATE SET
            sex = coalesce(excluded.sex, patients.sex),
            birth_date = coalesce(excluded.birth_date, patients.birth_date),
            age_years = coalesce(excluded.age_years, patients.age_years)""")


def _count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    rows = con.execute(f"SELECT count(*) FROM {table}").fetchall()  # all: a pending result blocks `register`
    return int(rows[0][0]) if rows else 0


def _chemotherapy_doses(result: ReadResult) -> list[tuple[str, date, str]]:
    """Cytotoxic medicines with a start date become chemotherapy dose dates (the drug table says
    which medicines are chemotherapy), so the hold and nadir rules can use them."""
    from ..rules.causes import match_medications

    doses = []
    for pid, med in result.medications:
        if med.start is None:
            continue
        if any(m.chemotherapy for m in match_medications([med])):
            doses.append((pid, med.start, med.name))
    return doses


def save_assessment(con: duckdb.DuckDBPyConnection, patient_id: str, assessment: dict[str, Any],
                    profile: str | None = None, criteria: str | None = None) -> None:
    con.execute("INSERT INTO assessments VALUES (?, ?, ?, ?, ?)",
                [patient_id, datetime.now(UTC), profile or assessment.get("profile"),
                 criteria or assessment.get("criteria"), json.dumps(assessment, default=str)])


def store_request(con: duckdb.DuckDBPyConnection, request: dict[str, Any], source: str = "request") -> IngestSummary:
    """Store one project JSON request (what `assess` takes) as part of a patient's history.

    For callers that hold a request rather than a lab file (history/report tests, demo data): the
    observations go through the same `Collector` -> `write_result` path as `leukowatch ingest`, so
    validation, idempotency (keyed on the request's content hash) and provenance are identical.
    The facts a lab file cannot carry -- `patient.duffy_null` and `chemotherapy.dose_dates` /
    `last_dose` with the regimen -- are written in a second transaction right after. Needs `patient.id`.
    (Added by the History room, issue 4.)
    """
    from ..request import parse_chemotherapy, parse_medication, parse_patient
    from .result import Collector

    patient = parse_patient(request.get("patient"))
    if not patient.id:
        raise InputError("patient.id", "a stored history needs a patient id")
    digest = hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()
    col = Collector("json", source)
    for i, obs in enumerate(request.get("observations") or []):
        col.offer(obs, f"observations[{i}]", patient_id=patient.id, source_key=f"{digest}:{i}")
    col.result.patients.append(patient)
    col.result.medications += [(patient.id, parse_medication(m, f"medications[{i}]"))
                               for i, m in enumerate(request.get("medications") or [])]
    col.result.conditions += [(patient.id, str(c)) for c in request.get("conditions") or []]
    summary = write_result(con, col.result, source, digest, "json")
    chemo = parse_chemotherapy(request.get("chemotherapy"))
    doses = sorted(set(chemo.dose_dates) | ({chemo.last_dose} if chemo.last_dose else set()))
    con.execute("BEGIN TRANSACTION")
    try:
        if patient.duffy_null:
            con.execute("UPDATE patients SET duffy_null = TRUE WHERE patient_id = ?", [patient.id])
        _insert_new(con, "chemotherapy", ["patient_id", "dose_date", "regimen"],
                    [[patient.id, dose, chemo.regimen] for dose in doses], source)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return summary


def store_facts(con: duckdb.DuckDBPyConnection, source: str, *, duffy_null: list[str] = (),  # type: ignore[assignment]
                medications: list[list[Any]] = (), chemotherapy: list[list[Any]] = (),  # type: ignore[assignment]
                conditions: list[list[Any]] = (),  # type: ignore[assignment]
                temperatures: list[list[Any]] = ()) -> None:  # type: ignore[assignment]
    """Facts about patients that lab files do not carry, in one transaction (idempotent).

    `duffy_null`: patient ids known to be Duffy-null; `medications`: [patient_id, name, start, stop];
    `chemotherapy`: [patient_id, dose_date, regimen]; `conditions`: [patient_id, name];
    `temperatures`: [patient_id, time, temperature_c]. Used to load
    a registry extract or the demo population beside its lab results.
    """
    con.execute("BEGIN TRANSACTION")
    try:
        _with_rows(con, "patients", ["patient_id"], [[pid] for pid in duffy_null],
                   "UPDATE patients SET duffy_null = TRUE WHERE patient_id IN (SELECT patient_id FROM _lw_rows)")
        _insert_new(con, "medications", ["patient_id", "name", "start", "stop"], list(medications), source)
        _insert_new(con, "chemotherapy", ["patient_id", "dose_date", "regimen"], list(chemotherapy), source)
        _insert_new(con, "conditions", ["patient_id", "name"], list(conditions), source)
        _insert_new(con, "temperatures", ["patient_id", "time", "temperature_c"], list(temperatures), source)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


# ---------------------------------------------------------------------------------------------
# Reading


def data_stamp(con: duckdb.DuckDBPyConnection) -> tuple[Any, ...]:
    """Changes when the clinical data changes, not when only the audit or tokens do: a cache of
    results computed over the whole store (the population screen) can key on it, where the file's
    mtime moves with every audited read."""
    row = con.execute("""SELECT (SELECT count(*) FROM ingests), (SELECT max(ingested_at) FROM ingests),
        (SELECT count(*) FROM patients), (SELECT count(*) FROM observations), (SELECT count(*) FROM medications),
        (SELECT count(*) FROM chemotherapy), (SELECT count(*) FROM conditions),
        (SELECT count(*) FILTER (WHERE duffy_null) FROM patients)""").fetchone()
    return tuple(row) if row else ()


def list_patients(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    rows = con.execute("""
        SELECT p.patient_id, p.sex, p.birth_date, count(o.obs_id), min(o.time), max(o.time)
        FROM patients p LEFT JOIN observations o USING (patient_id)
        GROUP BY ALL ORDER BY p.patient_id""").fetchall()
    return [{"patient_id": r[0], "sex": r[1] or "unknown", "birth_date": r[2], "n_observations": int(r[3]),
             "first": r[4], "last": r[5]} for r in rows]


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, (date, datetime)) else value


def load_patient_request(con: duckdb.DuckDBPyConnection, patient_id: str) -> dict[str, Any]:
    """The project JSON request for one stored patient, every observation included as history.

    A corrected result (status C) replaces the other results for the same analyte and time; the
    latest ingest wins among equals. Raises InputError when the patient has no observations.
    """
    row = con.execute("SELECT sex, birth_date, age_years, duffy_null FROM patients WHERE patient_id = ?",
                      [patient_id]).fetchone()
    if row is None:
        raise InputError("patient_id", "no such patient in the store")
    patient: dict[str, Any] = {"id": patient_id, "sex": row[0] or "unknown", "duffy_null": bool(row[3])}
    if row[1] is not None:
        patient["birth_date"] = row[1].isoformat()
    if row[2] is not None:
        patient["age_years"] = row[2]
    obs_rows = con.execute("""
        SELECT o.analyte, o.value, o.unit, o.percent, o.comparator, o.ref_low, o.ref_high, o.time, o.lab_flag,
               o.source_file, o.source_id, o.source_line
        FROM observations o LEFT JOIN ingests i USING (ingest_id)
        WHERE o.patient_id = ?
        QUALIFY row_number() OVER (
            PARTITION BY o.analyte, o.percent, o.time
            ORDER BY (o.status = 'C') DESC NULLS LAST, i.ingested_at DESC NULLS LAST, o.obs_id) = 1
        ORDER BY o.time NULLS FIRST, o.analyte""", [patient_id]).fetchall()
    if not obs_rows:
        raise InputError("patient_id", "the patient has no stored observations")
    observations = []
    for analyte, value, unit, percent, comparator, low, high, time, flag, sfile, sid, sline in obs_rows:
        obs: dict[str, Any] = {"analyte": analyte, "value": f"{comparator}{value!r}" if comparator else value,
                               "unit": "%" if percent else unit}
        if time is not None:
            obs["time"] = time.isoformat()
        if low is not None or high is not None:
            obs["reference_range"] = {"low": low, "high": high}
        if flag:
            obs["flag"] = flag
        obs["source"] = ":".join(str(x) for x in (Path(sfile).name if sfile else "", sid or "", sline or "") if x)
        observations.append(obs)
    meds = con.execute("SELECT name, start, stop FROM medications WHERE patient_id = ? ORDER BY start NULLS FIRST, name",
                       [patient_id]).fetchall()
    doses = con.execute("SELECT DISTINCT dose_date, regimen FROM chemotherapy WHERE patient_id = ? ORDER BY dose_date",
                        [patient_id]).fetchall()
    conds = con.execute("SELECT DISTINCT name FROM conditions WHERE patient_id = ? ORDER BY name",
                        [patient_id]).fetchall()
    request: dict[str, Any] = {
        "patient": patient,
        "observations": observations,
        "medications": [{"name": n, "start": _iso(s), "stop": _iso(e)} for n, s, e in meds],
        "conditions": [c[0] for c in conds],
    }
    from .result import set_draw_day_temperature

    # the highest stored temperature of the latest draw's day, by the rule `assess FILE` uses
    notes = set_draw_day_temperature(request, [r[7] for r in obs_rows if r[7] is not None],
                                     stored_temperatures(con, patient_id))
    if notes:
        request["warnings"] = notes
    if doses:
        request["chemotherapy"] = {"dose_dates": [d[0].isoformat() for d in doses],
                                   "last_dose": doses[-1][0].isoformat(), "regimen": doses[-1][1]}
    return request


def stored_temperatures(con: duckdb.DuckDBPyConnection, patient_id: str) -> list[Temperature]:
    """The person's stored body temperatures, oldest first (the lab feed's judge keeps them in memory
    with the history, so a temperature that arrives after the counts re-judges their draw)."""
    from .result import Temperature

    rows = con.execute("SELECT time, temperature_c, source FROM temperatures WHERE patient_id = ? ORDER BY time",
                       [patient_id]).fetchall()
    return [Temperature(patient_id, t, c, f"stored from {Path(src).name}" if src else "stored") for t, c, src in rows]
