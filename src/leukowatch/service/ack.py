"""HL7 v2 acknowledgements for the lab feed: read a message's header, build its ACK.

The header is read from the raw text, not from a parsed message, because an ACK is owed even for a
message that cannot be parsed (AR): its MSH-10 still goes back in MSA-2 whenever it can be found.
The ACK follows HL7 v2 chapter 2: its MSH swaps sender and receiver, keeps the message's own
separators, processing id and version; MSA-2 is always the message's MSH-10. Original mode answers
AA/AE/AR; enhanced mode (MSH-15 or MSH-16 valued) answers the accept acknowledgement CA/CE/CR when
MSH-15 asks for one, else the application acknowledgement when MSH-16 asks for one, else nothing.
An error names its place in an ERR segment (ERR-1 for v2.3/2.4, ERR-2..4 and ERR-8 from v2.5). From
v2.5 an AA also carries an ERR of severity W (warning) for each result of the message that will not be
stored, so the sender learns of it; v2.3/2.4 have no severity, and an ERR there would read as an error.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

#: Original-mode code -> enhanced-mode accept (commit) code (HL7 table 0008).
_COMMIT = {"AA": "CA", "AE": "CE", "AR": "CR"}
#: Default separators when a message has none we can read (HL7's recommended set).
_DEFAULT_ENCODING = "^~\\&"
_DEFAULT_VERSION = "2.5.1"
_ids = itertools.count(1)
_ID_PREFIX = f"LW{os.getpid():x}{int(time.time()):x}"


@dataclass(frozen=True)
class Header:
    """The MSH fields an ACK and the inbox need; '' when absent. `valid` is False when the text does
    not start with a readable MSH (then the ACK uses default separators)."""

    field_sep: str = "|"
    encoding: str = _DEFAULT_ENCODING
    sending_app: str = ""
    sending_facility: str = ""
    receiving_app: str = ""
    receiving_facility: str = ""
    message_type: str = ""  # MSH-9 as sent, e.g. "ORU^R01^ORU_R01"
    control_id: str = ""
    processing_id: str = ""
    version: str = ""
    accept_ack: str = ""  # MSH-15
    application_ack: str = ""  # MSH-16
    valid: bool = False

    @property
    def component_sep(self) -> str:
        return self.encoding[:1] or "^"

    def type_parts(self) -> tuple[str, str]:
        """(message code, trigger event) of MSH-9, upper-cased."""
        parts = self.message_type.split(self.component_sep)
        return parts[0].strip().upper(), (parts[1].strip().upper() if len(parts) > 1 else "")

    @property
    def enhanced(self) -> bool:
        return bool(self.accept_ack or self.application_ack)


def read_header(text: str) -> Header:
    """The MSH of `text` (the first segment); a Header with valid=False when there is none."""
    first = text.lstrip("\r\n\ufeff").split("\r", 1)[0].split("\n", 1)[0]
    if not first.startswith("MSH") or len(first) < 8 or first[3].isalnum() or first[3].isspace():
        return Header()
    sep = first[3]
    fields = first.split(sep)  # fields[1] is MSH-2 (encoding characters); fields[n] is MSH-(n+1)
    encoding = fields[1] if len(fields) > 1 and fields[1] else _DEFAULT_ENCODING

    def msh(n: int) -> str:
        return fields[n - 1].strip() if n - 1 < len(fields) else ""

    component = encoding[:1]
    return Header(field_sep=sep, encoding=encoding, sending_app=msh(3), sending_facility=msh(4),
                  receiving_app=msh(5), receiving_facility=msh(6), message_type=msh(9), control_id=msh(10),
                  processing_id=msh(11), version=msh(12).split(component)[0],
                  accept_ack=msh(15).upper(), application_ack=msh(16).upper(), valid=True)


@dataclass(frozen=True)
class AckError:
    """Where and why a message was not stored: segment, its repetition (1-based), field, an HL7
    table 0357 code with its text, and a plain message for the sender's error queue."""

    segment: str
    sequence: int
    field: int
    code: str
    code_text: str
    message: str


def _should_answer(condition: str, code: str) -> bool:
    """HL7 table 0155 (AL always, NE never, ER on error, SU on success)."""
    if condition == "AL":
        return True
    if condition == "ER":
        return code != "AA"
    if condition == "SU":
        return code == "AA"
    return False


def ack_code_for(header: Header, code: str) -> str | None:
    """The MSA-1 to send for an original-mode outcome `code` (AA/AE/AR), or None for no reply."""
    if not header.enhanced:
        return code
    if _should_answer(header.accept_ack, code):
        return _COMMIT[code]
    return code if _should_answer(header.application_ack, code) else None


def _escape(text: str, header: Header) -> str:
    """HL7 escape sequences for the separators in free text (the ACK must stay parseable)."""
    esc = header.encoding[2:3] or "\\"
    out = text.replace(esc, f"{esc}E{esc}")
    for char, code in ((header.field_sep, "F"), (header.component_sep, "S"), (header.encoding[1:2], "R"),
                       (header.encoding[3:4], "T")):
        if char:
            out = out.replace(char, f"{esc}{code}{esc}")
    return out.replace("\r", " ").replace("\n", " ")


def _version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in version.split("."))
    except ValueError:
        return ()


def new_control_id() -> str:
    """A control id unique within this process and across restarts (pid + start time + counter)."""
    return f"{_ID_PREFIX}{next(_ids)}"


def build_ack(header: Header, code: str, error: AckError | None = None, now: datetime | None = None,
              warnings: Sequence[AckError] = ()) -> str:
    """The ACK for a message with `header`; `code` is the MSA-1 to send (AA/AE/AR/CA/CE/CR).
    `warnings` (results of an accepted message that are not stored) go out only with an AA of v2.5
    or later, as ERR segments of severity W after the MSA.

    Segments are separated by CR, as MLLP peers expect; the caller frames it.
    """
    f, c = header.field_sep, header.component_sep
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S")
    trigger = header.type_parts()[1]
    version = header.version or _DEFAULT_VERSION
    msh = f.join(["MSH", header.encoding, header.receiving_app, header.receiving_facility, header.sending_app,
                  header.sending_facility, stamp, "", c.join(["ACK", trigger, "ACK"]) if trigger else "ACK",
                  new_control_id(), header.processing_id or "P", version])
    text = _escape(error.message, header) if error else ""
    segments = [msh, f.join(["MSA", code, header.control_id, text] if text else ["MSA", code, header.control_id])]
    if error is not None:
        segments.append(_err(error, header, version, "E" if code in ("AE", "CE", "AR", "CR") else "W"))
    if code == "AA" and _version_tuple(version) >= (2, 5):
        segments += [_err(w, header, version, "W") for w in warnings]
    return "\r".join(segments) + "\r"


def _err(error: AckError, header: Header, version: str, severity: str) -> str:
    """One ERR segment: ERR-2 location, ERR-3 code, ERR-4 severity and ERR-8 text from v2.5; ERR-1
    (location and code, no severity) before."""
    f, c = header.field_sep, header.component_sep
    text = _escape(error.message, header)
    field = str(error.field) if error.field else ""
    if _version_tuple(version) >= (2, 5):
        location = c.join([error.segment, str(error.sequence), field])
        code_cwe = c.join([error.code, _escape(error.code_text, header), "HL70357"])
        return f.join(["ERR", "", location, code_cwe, severity, "", "", "", text])
    sub = header.encoding[3:4] or "&"
    return f.join(["ERR", c.join([error.segment, str(error.sequence), field,
                                  sub.join([error.code, _escape(error.code_text, header), "HL70357"])])])
