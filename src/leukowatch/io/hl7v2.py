"""HL7 v2 ORU^R01 (2.3 to 2.5.1) -> observations, via the `hl7` library.

What labs actually send differs from the standard in small ways, each handled on purpose:
LF or CRLF instead of CR between segments, a UTF-8 BOM, MLLP framing bytes, several messages in
one file, OBR groups out of order, local codes instead of LOINC ("WBC^White Blood Cell Count^L"),
ranges written "4.0-11.0" or "4300 to 10800", SN values ("<^0.1"), and corrected results (OBX-11 C).
Every OBX becomes an observation or a reject naming "OBX[n]-field"; nothing is dropped silently.
The same OBX sent twice (in one message or in two) is rejected as "duplicate of OBX[n]".
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import hl7
import hl7.parser

from ..knowledge import load_table
from ..model import InputError, Patient
from ..units import body_temperature_code, canonical_analyte, loinc_lookup
from .result import TEMPERATURE, Collector, ReadResult, parse_range

#: OBX-11 result statuses that are not results (HL7 table 0085).
_NOT_RESULTS = {"X": "result cannot be obtained (OBX-11 X)", "D": "result deleted (OBX-11 D)",
                "W": "result posted in error (OBX-11 W)"}
_PENDING = {"I": "pending", "R": "not yet verified", "S": "partial", "O": "order detail only"}
_NUMERIC_TYPES = {"NM", "SN", "ST", ""}
_SEX = {"M": "male", "F": "female"}
_TS = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.\d{1,4})?([+-]\d{4})?$")
#: Parse-error field of the request dict -> OBX field, so rejects read "OBX[4]-6".
_OBX_FIELDS = {".unit": "-6", ".value": "-5", ".code": "-3", ".analyte": "-3", ".reference_range": "-7",
               ".time": "-14", "": "-5"}


def strip_framing(text: str) -> str:
    """Remove a BOM and MLLP framing (VT ... FS CR), and make CR the only segment separator."""
    text = text.replace("\ufeff", "").replace("\x0b", "").replace("\x1c", "")
    return text.replace("\r\n", "\r").replace("\n", "\r")


def split_messages(text: str) -> list[tuple[int, str]]:
    """(first line number, message text) for each MSH in the file; batch headers are ignored."""
    messages: list[tuple[int, list[str]]] = []
    for number, segment in enumerate(strip_framing(text).split("\r"), start=1):
        if not segment.strip() or segment[:3] in ("FHS", "BHS", "BTS", "FTS"):
            continue
        if segment.startswith("MSH"):
            messages.append((number, [segment]))
        elif messages:
            messages[-1][1].append(segment)
        else:
            raise InputError(f"line {number}", f"segment {segment[:3]!r} before the first MSH")
    if not messages:
        raise InputError("MSH", "no HL7 v2 message (no MSH segment)")
    return [(line, "\r".join(segs)) for line, segs in messages]


def parse_ts(value: str, field: str) -> datetime | None:
    """HL7 TS/DTM (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]) -> aware datetime; naive means UTC."""
    value = value.strip()
    if not value:
        return None
    m = _TS.match(value)
    if not m:
        raise InputError(field, f"not an HL7 date/time: {value!r}")
    year, month, day, hour, minute, second, zone = m.groups()
    tz = UTC
    if zone:
        sign = -1 if zone[0] == "-" else 1
        offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5]))
        if offset >= timedelta(hours=24):
            raise InputError(field, f"time zone offset out of range: {zone!r}")
        tz = timezone(sign * offset)
    try:
        return datetime(int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0),
                        int(second or 0), tzinfo=tz)
    except ValueError as exc:
        raise InputError(field, f"not a valid date/time {value!r} ({exc})") from None


class _Message:
    """Field access that never raises: a missing field/component is ''.

    The text is split once into segments and fields, exactly as `hl7.parse` splits them (the same
    separators, MSH-1 as field 1 and MSH-2 as field 2), and fields are read as plain strings. Why
    not python-hl7's containers: rebuilding a field's text from them on every read cost about 1 ms
    per message, the largest cost on the lab feed's ACK path. python-hl7 still reads the
    separators (`create_parse_plan`, which refuses what `hl7.parse` refuses) and unescapes.
    """

    def __init__(self, text: str, where: str) -> None:
        head, text = text[:8], text.strip()  # hl7.parse strips; the separator check reads the text as sent
        try:
            plan = hl7.parser.create_parse_plan(text)
            if len(set(plan.separators)) < len(plan.separators):
                hl7.parse(text)  # repeated encoding characters: hl7's parser refuses some; refuse the same
        except Exception as exc:  # hl7 raises several types on garbage; the user gets one clean error
            raise InputError(f"{where}MSH", f"not a parsable HL7 v2 message ({exc.__class__.__name__})") from None
        if len(head) < 8 or head[3] in "\r\n" or head[3].isalnum():
            raise InputError(f"{where}MSH-1", "missing field separators after MSH")
        self.field_sep, self.comp_sep, self.rep_sep = head[3], head[4], head[5]
        self._esc = plan.esc
        self._unescaper = plan.container([])  # an empty hl7.Message carrying the separators
        self._segments = [_split_segment(segment, text[3]) for segment in text.split("\r")]  # hl7's separator

    def segments(self) -> list[list[str]]:
        return self._segments

    def field(self, segment: list[str], number: int) -> str:
        return segment[number] if number < len(segment) else ""

    def comp(self, segment: list[str], number: int, component: int = 1, repetition: int = 1) -> str:
        value = segment[number] if number < len(segment) else ""
        if number != 2:
            reps = value.split(self.rep_sep)
            if repetition > len(reps):
                return ""
            value = reps[repetition - 1]
        elif repetition > 1:
            return ""
        parts = value.split(self.comp_sep)
        raw = parts[component - 1] if component <= len(parts) else ""
        if self._esc not in raw:
            return raw.strip()
        try:
            return str(self._unescaper.unescape(raw)).strip()
        except Exception:  # a malformed escape sequence: keep the text as sent
            return raw.strip()


def _split_segment(text: str, sep: str) -> list[str]:
    """A segment's fields as `hl7.parse` numbers them: an MSH keeps its field separator as field 1
    and its encoding characters as field 2 (what hl7's parser does, odd inputs included)."""
    if text[:3] not in ("MSH", "BHS", "FHS") or sep not in text:
        return text.split(sep) if text else []
    end = text.find(sep, 4)
    rest = text[end + 1:]
    return [text[:3], text[3], text[4:end], *(rest.split(sep) if rest else [])]


def _normalise_key(text: str) -> str:
    return text.strip().lower().replace(" ", "_").replace("-", "_")


def _map_code(msg: _Message, obx: list[str], aliases: dict[str, str]) -> tuple[dict[str, str] | None, str]:
    """OBX-3 -> {"code": LOINC} or {"analyte": name}; LOINC wins, then the alias table, then the
    analyte names the core accepts. Returns (mapping or None, how it was mapped)."""
    ident, text, system = msg.comp(obx, 3, 1), msg.comp(obx, 3, 2), msg.comp(obx, 3, 3).upper()
    alt, alt_text, alt_system = msg.comp(obx, 3, 4), msg.comp(obx, 3, 5), msg.comp(obx, 3, 6).upper()
    not_wbc = load_table("loinc").get("not_white_cells", {})
    for code, sys in ((ident, system), (alt, alt_system)):
        if sys in ("LN", "LOINC") and code in not_wbc:
            return None, f"LOINC {code} is {not_wbc[code]}"
        if sys in ("LN", "LOINC") and loinc_lookup(code):
            return {"code": code}, "LOINC"
    for candidate in (ident, text, alt, alt_text):
        if candidate and _normalise_key(candidate) in aliases:
            return {"analyte": aliases[_normalise_key(candidate)]}, f"alias {candidate!r}"
    for candidate in (ident, text, alt, alt_text):
        if not candidate:
            continue
        try:
            return {"analyte": canonical_analyte(candidate, "OBX-3")}, f"name {candidate!r}"
        except InputError:
            continue
    label = "^".join(x for x in (ident, text, system) if x)
    return None, f"OBX-3 {label!r} is not a blood count code leukowatch reads"


def _read_temperature(col: Collector, msg: _Message, obx: list[str], locator: str, patient_id: str | None,
                      obr_time: datetime | None, raw: str) -> None:
    """A body-temperature OBX -> the Collector's temperatures, or a reject (as context: `assess`
    goes on without it). Its time is OBX-14, else the OBR's, as for a count."""
    status = msg.comp(obx, 11).upper() or None
    value = _value(msg, obx, msg.comp(obx, 2).upper())
    if not value and status in _PENDING:
        col.skip(f"{locator}-5", f"no value yet: result {_PENDING[status]} (OBX-11 {status})", raw, patient_id)
        return
    try:
        time = parse_ts(msg.comp(obx, 14), f"{locator}-14") or obr_time
    except InputError as err:
        col.invalid(err.field, err.problem, raw, patient_id, TEMPERATURE)
        return
    col.temperature(value or None, msg.comp(obx, 6, 1) or msg.comp(obx, 6, 2) or None, time, locator,
                    patient_id=patient_id, raw=raw)


def _is_body_temperature(msg: _Message, obx: list[str]) -> bool:
    """OBX-3 is a LOINC body-temperature code (knowledge/temperature.toml): a vital sign sent in the
    result message, read as the measured temperature rather than skipped as "not a blood count"."""
    return any(sys in ("LN", "LOINC") and code and body_temperature_code(code) is not None
               for code, sys in ((msg.comp(obx, 3, 1), msg.comp(obx, 3, 3).upper()),
                                 (msg.comp(obx, 3, 4), msg.comp(obx, 3, 6).upper())))


def _value(msg: _Message, obx: list[str], vtype: str) -> str:
    if vtype == "SN":  # comparator ^ num1 [^ separator ^ num2]
        comparator, number = msg.comp(obx, 5, 1), msg.comp(obx, 5, 2)
        if msg.comp(obx, 5, 3) or msg.comp(obx, 5, 4):
            return f"{comparator}{number}{msg.comp(obx, 5, 3)}{msg.comp(obx, 5, 4)}"  # a ratio/range: parse error
        return f"{comparator}{number}"
    return msg.comp(obx, 5, 1)


def read_hl7(text: str, source: str = "<hl7>", aliases: dict[str, str] | None = None) -> ReadResult:
    """Every ORU message in `text` -> one ReadResult. `aliases` maps local OBX-3 codes or texts to
    analytes ("WBC" -> "wbc"); keys are matched case-insensitively."""
    alias_map = {_normalise_key(k): canonical_analyte(v, f"aliases.{k}") for k, v in (aliases or {}).items()}
    col = Collector("hl7", source, _OBX_FIELDS)
    messages = split_messages(text)
    for number, (first_line, body) in enumerate(messages, start=1):
        where = f"message {number} " if len(messages) > 1 else ""
        _read_message(col, _Message(body, where), where, first_line, source, alias_map)
    return col.finish()


def _read_message(col: Collector, msg: _Message, where: str, first_line: int, source: str,
                  aliases: dict[str, str]) -> None:
    segments = msg.segments()
    msh = segments[0]
    mtype = msg.comp(msh, 9, 1)
    if mtype and mtype != "ORU":
        raise InputError(f"{where}MSH-9", f"expected an ORU^R01 result message, got {mtype}^{msg.comp(msh, 9, 2)}")
    control_id = msg.comp(msh, 10) or f"{source}#{first_line}"
    patient_id: str | None = None
    obr_time: datetime | None = None
    n_obx = 0
    for offset, seg in enumerate(segments):
        name = msg.field(seg, 0)[:3]
        line = first_line + offset
        if name == "PID":
            patient_id = msg.comp(seg, 3, 1) or msg.comp(seg, 2, 1) or None
            sex = _SEX.get(msg.comp(seg, 8).upper()[:1], "unknown")
            birth = parse_ts(msg.comp(seg, 7)[:8], f"{where}PID-7")
            col.result.patients.append(Patient(id=patient_id, sex=sex,  # type: ignore[arg-type]
                                               birth_date=birth.date() if birth else None))
        elif name == "OBR":
            obr_time = parse_ts(msg.comp(seg, 7), f"{where}OBR-7")
        elif name == "OBX":
            n_obx += 1
            locator = f"{where}OBX[{n_obx}]"
            _read_obx(col, msg, seg, locator, patient_id, obr_time, control_id, line, aliases)


def _read_obx(col: Collector, msg: _Message, obx: list[str], locator: str, patient_id: str | None,
              obr_time: datetime | None, control_id: str, line: int, aliases: dict[str, str]) -> None:
    raw = msg.field(obx, 0) and "|".join(msg.field(obx, i) for i in range(len(obx)))
    status = msg.comp(obx, 11).upper() or None
    vtype = msg.comp(obx, 2).upper()
    if status in _NOT_RESULTS:
        col.skip(f"{locator}-11", _NOT_RESULTS[status], raw, patient_id)
        return
    if _is_body_temperature(msg, obx):
        _read_temperature(col, msg, obx, locator, patient_id, obr_time, raw)
        return
    mapping, how = _map_code(msg, obx, aliases)
    if mapping is None:
        col.skip(f"{locator}-3", how, raw, patient_id)
        return
    value = _value(msg, obx, vtype)
    if not value:
        if status in _PENDING:
            col.skip(f"{locator}-5", f"no value yet: result {_PENDING[status]} (OBX-11 {status})", raw, patient_id)
        else:
            col.invalid(f"{locator}-5", "empty result value", raw, patient_id)
        return
    if vtype not in _NUMERIC_TYPES:
        col.skip(f"{locator}-2", f"value type {vtype} is not a number", raw, patient_id)
        return
    try:
        time = parse_ts(msg.comp(obx, 14), f"{locator}-14") or obr_time
    except InputError as err:
        col.invalid(err.field, err.problem, raw, patient_id)
        return
    unit = msg.comp(obx, 6, 1) or msg.comp(obx, 6, 2)
    obs: dict[str, Any] = {**mapping, "value": value, "unit": unit or None,
                           "source": f"{control_id}:{locator}" + ("" if how == "LOINC" else f" ({how})")}
    if time is not None:
        obs["time"] = time.isoformat()
    rng = parse_range(msg.comp(obx, 7))
    if rng:
        obs["reference_range"] = rng
    if msg.comp(obx, 8):
        obs["flag"] = msg.comp(obx, 8)
    col.offer(obs, locator, patient_id=patient_id, source_key=f"hl7:{control_id}:{locator}",
              source_id=control_id, line=line, status=status, raw=raw)

