"""The MLLP listener (`leukowatch listen`) driven by python-hl7's own MLLP client and `mllp_send`:
ACK codes and MSA-2, idempotent resends, many connections, size limit, enhanced mode, TLS, and a
kill -9 mid-stream after which every AA'd message is in the store."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import hl7
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from feed_helpers import (
    FEED_STREAM,
    ack_fields,
    exchange,
    feed_service,
    listener,
    oru,
    query,
    send_all,
    token,
    wait_judged,
    wait_port,
)
from hl7.mllp import open_hl7_connection


def test_ack_codes_and_msa2_good_bad_unparseable(tmp_path: Path) -> None:
    db = tmp_path / "feed.duckdb"
    no_pid = "\r".join(oru("BAD-PID").split("\r")[:1] + oru("BAD-PID").split("\r")[2:])
    unknown_code = oru("BAD-OBX").replace("6690-2^WBC^LN", "XYZ^Mystery^L").replace("751-8^ANC^LN", "QQ^Other^L")
    adt = oru("ADT-1").replace("ORU^R01^ORU_R01", "ADT^A01^ADT_A01")
    v23 = oru("OLD-1", version="2.3").replace("\rPID|1||P1^^^CITYLAB^MR", "\rPID|1||^^^CITYLAB^MR")
    with listener(db) as (_, port):
        acks = exchange(port, [oru("GOOD-1"), no_pid, unknown_code, adt, "this is not HL7", v23, oru("GOOD-2")])
    good, pid, obx, not_oru, garbage, old, after = acks
    assert (good["code"], good["control_id"]) == ("AA", "GOOD-1")
    # the ACK's MSH swaps sender and receiver and answers in the message's own version
    assert (good["sending_app"], good["receiving_app"], good["receiving_facility"]) == ("LEUKOWATCH", "LABSYS", "CITYLAB")
    assert good["version"] == "2.5.1" and good["type"] == "ACK^R01^ACK" and "err" not in good
    assert (pid["code"], pid["control_id"]) == ("AE", "BAD-PID") and pid["err"].startswith("ERR||PID^1^")
    assert (obx["code"], obx["control_id"]) == ("AE", "BAD-OBX") and "OBX^1^3" in obx["err"]
    assert (not_oru["code"], not_oru["control_id"]) == ("AR", "ADT-1") and "MSH^1^9" in not_oru["err"]
    assert garbage["code"] == "AR" and garbage["control_id"] == ""
    # v2.3 carries the error location in ERR-1, and the version comes back as sent
    assert (old["code"], old["control_id"], old["version"]) == ("AE", "OLD-1", "2.3")
    assert old["err"].startswith("ERR|PID^1^3^101&")
    # a bad message never drops the connection: the last message on it was still answered
    assert (after["code"], after["control_id"]) == ("AA", "GOOD-2")
    rows = query(db, "SELECT control_id, status, ack_code FROM feed_inbox ORDER BY inbox_id")
    assert [r for r in rows if r[1] == "stored"] == [("GOOD-1", "stored", "AA"), ("GOOD-2", "stored", "AA")]
    assert {r[0] for r in rows if r[1] == "error"} == {"BAD-PID", "BAD-OBX", "ADT-1", "", "OLD-1"}


def test_a_message_without_a_control_id_is_rejected_not_stored(tmp_path: Path) -> None:
    db = tmp_path / "feed.duckdb"
    with listener(db) as (_, port):
        nameless, after = exchange(port, [oru(""), oru("GOOD-3")])
    # AA would tell the engine "stored" for an ACK it cannot match to any message it sent
    assert nameless["code"] == "AR" and nameless["err"].startswith("ERR||MSH^1^10|101^")
    assert (after["code"], after["control_id"]) == ("AA", "GOOD-3")
    assert query(db, "SELECT control_id, status FROM feed_inbox ORDER BY inbox_id") == [("", "error"), ("GOOD-3", "stored")]


def test_a_message_with_only_undated_results_is_ae_not_stored(tmp_path: Path) -> None:
    db = tmp_path / "feed.duckdb"
    undated = "\r".join(line.rsplit("|", 1)[0] + "|" if line.startswith(("OBX", "OBR")) else line
                        for line in oru("UNDATED-1", patient="U9").split("\r"))
    with listener(db) as (_, port):
        (ack,) = exchange(port, [undated])
    assert ack["code"] == "AE" and ack["err"].startswith("ERR||OBX^1^14|101^")
    assert query(db, "SELECT count(*) FROM observations") == [(0,)]


def test_a_message_whose_every_result_is_refused_creates_no_patient(tmp_path: Path) -> None:
    """The patient list (`/api/patients`, the `/patients` page) holds people with something stored:
    a message none of whose results the store keeps is AE and leaves no empty patient behind."""
    db = tmp_path / "feed.duckdb"
    auth = {"Authorization": f"Bearer {token(db)}"}
    before_birth = oru("BIRTH-1", patient="BB", when="196501010800", anc=0.3)  # PID-7 is 1970-01-01
    undated = "\r".join(line.rsplit("|", 1)[0] + "|" if line.startswith(("OBX", "OBR")) else line
                        for line in oru("UNDATED-2", patient="UD").split("\r"))
    unreadable = oru("BADVAL-1", patient="UR").replace("|6.0|", "|six|").replace("|3.5|", "|lots|")
    future = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    fever_later = "\r".join([*oru("FUTURE-T", patient="FT").split("\r")[:3],
                             f"OBX|1|NM|8310-5^Body temperature^LN||38.9|Cel|||||F|||{future:%Y%m%d%H%M}"])
    with feed_service(db) as (base, app, port):
        acks = exchange(port, [before_birth, undated, unreadable, fever_later, oru("GOOD-4", patient="OK")])
        wait_judged(app)
        patients = httpx.get(f"{base}/api/patients", headers=auth, timeout=30).json()
    assert [a["code"] for a in acks] == ["AE", "AE", "AE", "AE", "AA"]
    assert acks[0]["err"].startswith("ERR||OBX^1^14|102^") and "before the patient's birth date" in acks[0]["err"]
    assert acks[3]["err"].startswith("ERR||OBX^1^14|102^") and "in the future" in acks[3]["err"]
    assert [p["patient_id"] for p in patients] == ["OK"]
    assert query(db, "SELECT DISTINCT patient_id FROM observations") == [("OK",)]
    assert query(db, "SELECT count(*) FROM worklist WHERE patient_id <> 'OK'") == [(0,)]


def test_an_accepted_message_warns_of_each_result_it_does_not_store(tmp_path: Path) -> None:
    """AA with ERR severity W (v2.5+) for an unreadable and an undated OBX beside a good one: the
    sender learns which results were not stored; v2.3 has no severity, so its AA carries no ERR."""
    db = tmp_path / "feed.duckdb"
    lines = oru("PART-1", patient="PW", anc=0.3).replace("|6.0|", "|six|").split("\r")
    partly = "\r".join([*lines, "OBX|3|NM|26464-8^WBC^LN||5.0|10*9/L|||||F"])  # neither OBX-14 nor OBR-7...
    partly = partly.replace("58410-2^CBC^LN|||202611010800", "58410-2^CBC^LN|||")  # ...so only OBX 2 is dated
    old = oru("PART-2", patient="PW", version="2.3").replace("|6.0|", "|six|")
    with listener(db) as (_, port):
        warned, plain = asyncio.run(send_all(port, [partly, old]))
    assert str(warned.segment("MSA")) == "MSA|AA|PART-1"  # no MSA-3: an engine that shows it takes it for an error
    errs = [str(e) for e in warned.segments("ERR")]
    assert len(errs) == 2 and all(e.split("|")[4] == "W" for e in errs)
    assert errs[0].startswith("ERR||OBX^3^14|101^") and "no observation time" in errs[0]
    assert errs[1].startswith("ERR||OBX^1^5|102^") and "not stored" in errs[1] and "six" in errs[1]
    assert str(plain.segment("MSA")(1)) == "AA" and not [s for s in plain if str(s(0)) == "ERR"]
    assert query(db, "SELECT analyte, value FROM observations ORDER BY value") == [("neutrophils", 0.3), ("neutrophils", 3.5)]


def test_resent_message_is_acked_aa_and_stored_once(tmp_path: Path) -> None:
    db = tmp_path / "feed.duckdb"
    message = oru("DUP-1", patient="P9", anc=0.3)
    changed = oru("DUP-1", patient="P9", anc=0.4)  # same MSH-10, other content: a different message
    with listener(db) as (_, port):
        first = exchange(port, [message])
        again = exchange(port, [message, message])  # on a new connection, as after a lost ACK
        other = exchange(port, [changed])
    assert [a["code"] for a in first + again + other] == ["AA"] * 4
    assert [a["control_id"] for a in first + again] == ["DUP-1"] * 3
    assert query(db, "SELECT count(*) FROM feed_inbox WHERE control_id = 'DUP-1'") == [(2,)]
    values = query(db, "SELECT value FROM observations WHERE patient_id = 'P9' AND analyte = 'neutrophils' "
                       "ORDER BY value")
    assert values == [(0.3,), (0.4,)]


def test_mllp_send_command_sends_the_example_stream(tmp_path: Path) -> None:
    mllp_send = shutil.which("mllp_send", path=str(Path(sys.executable).parent))
    assert mllp_send, "python-hl7's mllp_send is installed with the hl7 package"
    with listener(tmp_path / "feed.duckdb") as (_, port):
        out = subprocess.run([mllp_send, "--loose", "--file", str(FEED_STREAM), "--port", str(port), "127.0.0.1"],
                             capture_output=True, check=True, timeout=60).stdout
    blocks = [block.strip(b"\x0b\r\n") for block in out.split(b"\x1c")]  # it prints each framed ACK
    acks = [hl7.parse(block.decode()) for block in blocks if block.startswith(b"MSH")]
    assert [(str(a.segment("MSA")(1)), str(a.segment("MSA")(2))) for a in acks] == [
        ("AA", f"FEED-{n:04d}") for n in range(1, 7)]


def test_thousand_messages_over_five_connections_none_lost(tmp_path: Path) -> None:
    db = tmp_path / "feed.duckdb"
    per_connection = 200

    async def stream(c: int) -> list[hl7.Message]:
        messages = [oru(f"C{c}-{i:04d}", patient=f"P{c}-{i % 20}", when=f"2026110{1 + i % 9}0800",
                        anc=round(0.2 + (i % 30) / 10, 1)) for i in range(per_connection)]
        return await send_all(port, messages)

    async def all_streams() -> list[list[hl7.Message]]:
        return await asyncio.gather(*(stream(c) for c in range(5)))

    with listener(db) as (_, port):
        results = asyncio.run(all_streams())
    for c, acks in enumerate(results):
        fields = [ack_fields(a) for a in acks]
        assert [f["code"] for f in fields] == ["AA"] * per_connection
        assert [f["control_id"] for f in fields] == [f"C{c}-{i:04d}" for i in range(per_connection)]
    assert query(db, "SELECT count(DISTINCT control_id), count(*) FROM feed_inbox") == [(1000, 1000)]
    # and none lost further on: every message judged (the stop drains the judge), both results stored
    assert query(db, "SELECT (SELECT judged_upto FROM feed_progress) = (SELECT max(inbox_id) FROM feed_inbox)") == [
        (True,)]
    assert query(db, "SELECT count(*) FROM observations") == [(2000,)]
    # per connection (= per patient here), arrival order is kept in the inbox ids
    for c in range(5):
        ids = [r[0] for r in query(db, "SELECT control_id FROM feed_inbox WHERE control_id LIKE ? ORDER BY inbox_id",
                                   [f"C{c}-%"])]
        assert ids == sorted(ids)


def test_size_limit_answers_ar_and_keeps_the_connection(tmp_path: Path) -> None:
    db = tmp_path / "feed.duckdb"
    big = oru("BIG-1") + "\r" + "\r".join(f"NTE|{i}||{'x' * 200}" for i in range(40))
    with listener(db, "--max-message-bytes", "3000") as (_, port):
        acks = exchange(port, [big, oru("SMALL-1"), big, oru("SMALL-2")])
    assert [(a["code"], a["control_id"]) for a in acks] == [
        ("AR", "BIG-1"), ("AA", "SMALL-1"), ("AR", "BIG-1"), ("AA", "SMALL-2")]
    assert "larger than the limit of 3000 bytes" in acks[0]["err"]
    assert query(db, "SELECT control_id FROM feed_inbox WHERE status = 'stored' ORDER BY inbox_id") == [
        ("SMALL-1",), ("SMALL-2",)]


def test_enhanced_mode_answers_commit_acks(tmp_path: Path) -> None:
    with listener(tmp_path / "feed.duckdb") as (_, port):
        acks = exchange(port, [oru("ENH-1", msh15="AL", msh16="NE"),
                               oru("ENH-2", msh15="AL", msh16="AL").replace("PID|1||P1", "PID|1||"),
                               oru("ENH-3", msh15="NE", msh16="AL")])
    assert [(a["code"], a["control_id"]) for a in acks] == [("CA", "ENH-1"), ("CE", "ENH-2"), ("AA", "ENH-3")]


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls_listener(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    context = ssl.create_default_context(cafile=str(cert))
    with listener(tmp_path / "feed.duckdb", "--mllp-tls-cert", str(cert), "--mllp-tls-key", str(key)) as (_, port):
        async def over_tls() -> list[hl7.Message]:
            reader, writer = await open_hl7_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
            writer.writemessage(oru("TLS-1"))
            await writer.drain()
            ack = await asyncio.wait_for(reader.readmessage(), timeout=30)
            writer.close()
            return [ack]

        acks = asyncio.run(over_tls())
        with socket.create_connection(("127.0.0.1", port), timeout=10) as plain:
            plain.sendall(b"\x0b" + oru("PLAIN-1").encode() + b"\x1c\r")
            try:
                answer = plain.recv(4096)
            except (ConnectionError, TimeoutError):
                answer = b""
    assert ack_fields(acks[0])["code"] == "AA"
    assert b"MSA|" not in answer  # without TLS, no ACK (and nothing stored)
    assert query(tmp_path / "feed.duckdb", "SELECT control_id FROM feed_inbox") == [("TLS-1",)]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs kill -9")
def test_kill9_mid_stream_every_aa_message_is_stored(tmp_path: Path) -> None:
    db = tmp_path / "feed.duckdb"
    acked: list[str] = []

    async def stream(c: int, port: int) -> None:
        reader, writer = await open_hl7_connection("127.0.0.1", port)
        try:
            for i in range(100_000):
                writer.writemessage(oru(f"K{c}-{i:05d}", patient=f"K{c}", when=f"2026110{1 + i % 9}0800"))
                await writer.drain()
                ack = ack_fields(await asyncio.wait_for(reader.readmessage(), timeout=30))
                if ack["code"] == "AA":
                    acked.append(ack["control_id"])
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            return  # the server died mid-stream

    async def until_killed(proc: subprocess.Popen, port: int) -> None:
        tasks = [asyncio.create_task(stream(c, port)) for c in range(3)]
        while len(acked) < 300:
            await asyncio.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)

    with listener(db) as (proc, port):
        asyncio.run(until_killed(proc, port))
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    stored = {r[0] for r in query(db, "SELECT control_id FROM feed_inbox WHERE status = 'stored'")}
    assert set(acked) <= stored, f"{len(set(acked) - stored)} AA'd messages missing after kill -9"
    # restarted, the listener judges what the killed one had stored but not judged, then answers on
    with listener(db) as (_, port):
        assert exchange(port, [oru("AFTER-1", patient="K0", when="202611200800")])[0]["code"] == "AA"
    judged, last = query(db, "SELECT (SELECT judged_upto FROM feed_progress), (SELECT max(inbox_id) FROM feed_inbox)")[0]
    assert judged == last


def test_serve_with_mllp_port_runs_the_feed_in_the_web_service(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        web_port = s.getsockname()[1]
    db = tmp_path / "feed.duckdb"
    proc = subprocess.Popen([sys.executable, "-m", "leukowatch.cli", "serve", "--db", str(db), "--port", str(web_port),
                             "--mllp-port", "0", "--log-level", "warning"], stderr=subprocess.PIPE, text=True)
    try:
        port = wait_port(proc)
        acks = exchange(port, [oru("SERVE-1")])
        page = httpx.get(f"http://127.0.0.1:{web_port}/worklist", follow_redirects=False, timeout=10)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        assert proc.stderr is not None
        proc.stderr.close()
    assert (acks[0]["code"], acks[0]["control_id"]) == ("AA", "SERVE-1")
    assert page.status_code in (302, 303, 307)  # the worklist page is there, and needs a signed-in user
    assert query(db, "SELECT control_id FROM feed_inbox") == [("SERVE-1",)]


def test_stray_bytes_between_blocks_and_pipelined_messages(tmp_path: Path) -> None:
    """Some engines send CR LF after the end block, or several messages before reading the ACKs."""
    frames = b"".join(b"\x0b" + oru(f"PIPE-{n}").encode() + b"\x1c\r\n" for n in range(3))
    with listener(tmp_path / "feed.duckdb") as (_, port), socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(frames)
        data = b""
        while data.count(b"\x1c\r") < 3:
            chunk = s.recv(4096)
            assert chunk, "the listener closed the connection"
            data += chunk
    acks = [hl7.parse(block.strip(b"\x0b\r\n").decode()) for block in data.split(b"\x1c\r") if block.strip()]
    assert [(str(a.segment("MSA")(1)), str(a.segment("MSA")(2))) for a in acks] == [
        ("AA", "PIPE-0"), ("AA", "PIPE-1"), ("AA", "PIPE-2")]


def test_group_commit_waits_for_the_connected_peers(tmp_path: Path) -> None:
    """Messages from several connections share one inbox commit: a batch waits (at most the linger)
    until every connected peer has a message pending; a peer that sends nothing delays it only that long."""
    from leukowatch.service.inbox import InboxBatcher, classify
    from leukowatch.service.writer import StoreWriter

    class CountingWriter(StoreWriter):
        """The real writer, counting its transactions."""

        jobs = 0

        async def run(self, fn):  # type: ignore[no-untyped-def]
            CountingWriter.jobs += 1
            return await super().run(fn)

    async def scenario(writer: StoreWriter) -> tuple[list[str], int, list[str], int]:
        batcher = InboxBatcher(writer, peers=lambda: 5, linger_s=2.0)
        batcher.start()

        async def peer(n: int) -> str:
            await asyncio.sleep(0.02 * n)  # five peers send at different moments
            return (await batcher.store(classify(oru(f"GC-{n}", patient=f"GC{n}")))).code

        codes = await asyncio.gather(*(peer(n) for n in range(5)))
        together = CountingWriter.jobs
        batcher.linger_s = 0.2
        alone = [(await batcher.store(classify(oru("GC-ALONE")))).code]  # the other four peers stay silent
        await batcher.stop()
        return codes, together, alone, CountingWriter.jobs - together

    writer = CountingWriter(str(tmp_path / "feed.duckdb"))
    writer.run_sync(lambda con: None)
    try:
        codes, together, alone, after = asyncio.run(scenario(writer))
    finally:
        writer.close()
    assert codes == ["AA"] * 5 and together == 1
    assert alone == ["AA"] and after == 1
    assert query(tmp_path / "feed.duckdb", "SELECT count(*) FROM feed_inbox") == [(6,)]
