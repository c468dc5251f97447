"""HL7 v2 ORU^R01 reader: the public samples (shared/samples) and our own fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from leukowatch.assess import assess
from leukowatch.io import read_path, read_text, request_from_text
from leukowatch.io.commands import load_aliases
from leukowatch.model import InputError

DATA = Path(__file__).parent / "data"


def _by(result, analyte, percent=False):
    return [i.observation for i in result.items if i.observation.analyte == analyte
            and i.observation.percent == percent]


def test_nist_cbc_units_scale_and_ranges(samples_dir):
    r = read_path(samples_dir / "hl7v2_nist_lri_cbc_typ_message.hl7")
    assert r.reconciles()
    (wbc,) = _by(r, "wbc")
    assert wbc.value == pytest.approx(105.6)  # {cells}/uL -> 10^9/L
    assert wbc.reference_range.low == pytest.approx(4.3)  # "4300 to 10800" in the same unit
    (anc,) = _by(r, "neutrophils")
    assert anc.value == pytest.approx(58) and anc.lab_flag == "HH"
    assert wbc.time.isoformat() == "2011-01-03T14:34:28-08:00"
    assert r.patients[0].sex == "male" and r.patients[0].birth_date.isoformat() == "1961-06-15"
    # the TX morphology comment is not a count
    assert any("11156-7" in x.reason for x in r.rejects)
    a = assess(request_from_text((samples_dir / "hl7v2_nist_lri_cbc_typ_message.hl7").read_text("utf-8-sig"),
                                 "hl7", "nist"))
    assert a.finding("leukocytosis") and a.finding("neutrophilia") and not a.finding("leukopenia")


def test_lab_oru_1_pending_wbc_and_percent_only(samples_dir):
    r = read_path(samples_dir / "hl7v2_msconverter_lab_oru_1.hl7")
    assert r.reconciles()
    assert not _by(r, "wbc")  # OBX 11156-7 pending, no value
    assert any(x.locator == "OBX[1]-5" and "pending" in x.reason for x in r.rejects)
    assert _by(r, "neutrophils", percent=True)[0].value == 72
    a = assess(request_from_text((samples_dir / "hl7v2_msconverter_lab_oru_1.hl7").read_text("utf-8-sig"),
                                 "hl7", "oru1"))
    assert "neutrophils" not in a.counts or a.counts["neutrophils"].percent is not None
    assert not a.finding("leukopenia")


def test_lab_oru_2_giga_units_and_groups_out_of_order(samples_dir):
    r = read_path(samples_dir / "hl7v2_msconverter_lab_oru_2.hl7")
    (wbc,) = _by(r, "wbc")
    assert wbc.value == pytest.approx(8.2)  # giga.l-1, identified by the text LEUKOCYTES
    a = assess(request_from_text((samples_dir / "hl7v2_msconverter_lab_oru_2.hl7").read_text("utf-8-sig"),
                                 "hl7", "oru2"))
    assert a.counts["neutrophils"].value == pytest.approx(0.72 * 8.2)
    assert not a.finding("neutropenia")


def test_mixed_fixture_comparators_corrections_and_rejects():
    r = read_path(DATA / "io_oru_mixed.hl7", aliases=load_aliases(str(DATA / "io_aliases.toml")))
    assert (r.read, r.accepted, r.rejected) == (10, 5, 5)
    (anc,) = _by(r, "neutrophils")
    assert anc.comparator == "<" and anc.value == pytest.approx(0.1)  # SN "<^0.1"
    (lymph,) = _by(r, "lymphocytes")
    assert lymph.value == pytest.approx(0.8)  # the corrected (C) result replaces the final one
    reasons = {x.locator: x for x in r.rejects}
    assert reasons["OBX[3]-11"].kind == "skipped"  # status X
    assert "bananas/uL" in reasons["OBX[6]-6"].reason and reasons["OBX[6]-6"].kind == "invalid"
    assert "missing unit" in reasons["OBX[7]-6"].reason
    assert reasons["OBX[4]"].reason.startswith("superseded")
    (plt,) = _by(r, "platelets")
    assert plt.value == 155  # unit written with the escape 10\S\9/L
    assert _by(r, "hemoglobin")[0].time is not None  # second OBR group takes OBR-7


def test_mllp_framing_and_crlf_or_lf_separators():
    text = (DATA / "io_oru_mllp.hl7").read_text()
    for variant in (text, text.replace("\r", "\n"), text.replace("\r", "\r\n")):
        r = read_text(variant, "hl7", "mllp")
        assert r.accepted == 1 and r.observations[0].value == pytest.approx(3.1)


def test_two_messages_in_one_file_keep_their_own_locators():
    two = (DATA / "io_oru_mllp.hl7").read_text() + (DATA / "io_oru_mixed.hl7").read_text()
    r = read_text(two, "hl7", "batch")
    assert r.reconciles() and r.accepted == 6
    assert any(x.locator.startswith("message 2 OBX[") for x in r.rejects)


@pytest.mark.parametrize("text, field", [
    ("PID|1||X\rOBX|1|NM|6690-2^WBC^LN||3|10*9/L", "line 1"),
    ("MSH|^~\\&|A|B|C|D|20260101||ADT^A01|1|P|2.5\rPID|1||X", "MSH-9"),
    ("MSH|^~\\&|A|B|C|D|20260101||ORU^R01|1|P|2.5\rOBR|1|||CBC|||2026-13-45", "OBR-7"),
    ("hello", "line 1"),
    ("", "MSH"),
])
def test_malformed_messages_name_the_segment(text, field):
    with pytest.raises(InputError) as err:
        read_text(text, "hl7", "bad")
    assert err.value.field.startswith(field)


def test_assess_refuses_an_unreadable_white_cell_value():
    with pytest.raises(InputError) as err:
        request_from_text((DATA / "io_oru_mixed.hl7").read_text(), "hl7", "mixed")
    assert err.value.field == "OBX[6]-6"


# -- the reader's own field splitting (io/hl7v2._Message) must read what python-hl7 reads ---------

_ODD_MESSAGES = [
    "MSH|^~\\&|LAB|CITY\\F\\X|LW|WARD|202611010800||ORU^R01|C1|P|2.5.1\rPID|1||P1^^^CITY^MR~ALT^^^X||DOE^A\r"
    "OBX|1|SN|751-8^ANC^LN||<^0.1|10*9/L|1.5-7.5|L|||F|||202611010800  ",
    "MSH|^~\\&\rPID|1||P1",  # no second field separator: hl7 reads the rest as MSH-2
    "MSH#!@$%#A#B#C#D#202611010800##ORU!R01#C2#P#2.3\rPID#1##P9!!!Q",  # other separators
    "MSH|^~\\&|A||||||ORU^R01|C3|P|2.5\rNTE|||x\\.br\\y\\H\\z\\N\\\rOBX|1|NM|WBC||5|||||||",
]


def _messages() -> list[str]:
    from leukowatch.io.hl7v2 import split_messages

    texts = [body for path in sorted(DATA.glob("*.hl7"))
             for _, body in split_messages(path.read_text(encoding="utf-8", errors="replace"))]
    return texts + _ODD_MESSAGES


@pytest.mark.parametrize("text", _messages())
def test_reader_fields_are_python_hl7_fields(text):
    """The reader splits each message once into plain strings: every field must be python-hl7's
    field as text (MSH-1 the separator, MSH-2 the encoding characters, odd inputs included)."""
    import hl7

    from leukowatch.io.hl7v2 import _Message

    ours, theirs = _Message(text, ""), hl7.parse(text)
    assert [list(fields) for fields in ours.segments()] == [[str(f) for f in segment] for segment in theirs]


def test_reader_unescapes_as_python_hl7_does():
    import hl7

    from leukowatch.io.hl7v2 import _Message

    text = _ODD_MESSAGES[3]
    ours, theirs = _Message(text, ""), hl7.parse(text)
    nte = ours.segments()[1]
    assert ours.comp(nte, 3) == str(theirs.unescape("x\\.br\\y\\H\\z\\N\\")).strip() == "x\ry_z_"
    first = _Message(_ODD_MESSAGES[0], "")
    assert first.comp(first.segments()[0], 4) == "CITY|X"  # \F\ is the field separator
    assert first.comp(first.segments()[1], 3, 1, 2) == "ALT"  # the second repetition of PID-3
    assert ours.comp(ours.segments()[2], 5) == "5" and ours.comp(ours.segments()[2], 99) == ""


@pytest.mark.parametrize("text", ["MSH", "MSH|", "MSH|^^~\\&|A|B\rPID|1||X^Y", "MSHA^~\\&|x"])
def test_reader_refuses_what_python_hl7_refuses(text):
    import hl7

    from leukowatch.io.hl7v2 import _Message

    try:
        hl7.parse(text)
    except Exception:  # noqa: BLE001 - whatever hl7 raises, the reader gives one clean error
        with pytest.raises(InputError, match="not a parsable HL7"):
            _Message(text, "")
        return
    if text[3].isalnum():
        with pytest.raises(InputError, match="missing field separators"):
            _Message(text, "")
    else:
        assert _Message(text, "").segments()
