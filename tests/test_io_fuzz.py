"""Corrupted HL7 messages and FHIR JSON: the readers raise InputError or return rejects, never
anything else (no traceback can reach a user)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leukowatch.io import read_text, request_from_text
from leukowatch.model import InputError

DATA = Path(__file__).parent / "data"
HL7 = (DATA / "io_oru_mixed.hl7").read_text()
FHIR = (DATA / "io_bundle_mixed.json").read_text()
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
JUNK = st.text(alphabet=st.sampled_from(list("|^~\\&\r\n\x0b\x1c0123456789.-<>+ MSHOBXPIDRLNC%/*e")), max_size=12)


def _only_clean_errors(fmt: str, text: str) -> None:
    try:
        result = read_text(text, fmt, "fuzz")
        assert result.read == result.accepted + result.rejected
    except InputError as err:
        assert err.field and err.problem
    with contextlib.suppress(InputError):
        request_from_text(text, fmt, "fuzz")


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, len(HL7)), st.integers(0, 8), JUNK), min_size=1, max_size=6))
def test_corrupted_hl7(edits):
    text = HL7
    for pos, cut, junk in edits:
        text = text[:pos] + junk + text[pos + cut:]
    _only_clean_errors("hl7", text)


@SETTINGS
@given(st.text(max_size=200))
def test_arbitrary_text_as_hl7(text):
    _only_clean_errors("hl7", "MSH|^~\\&|" + text)


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _paths(node, path=()):
    yield path
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*path, i))


ALL_PATHS = [p for p in _paths(json.loads(FHIR)) if p]


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(ALL_PATHS), _JSON_VALUES), min_size=1, max_size=4))
def test_corrupted_fhir_values(edits):
    data = json.loads(FHIR)
    for path, value in edits:
        node = data
        try:
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue
    _only_clean_errors("fhir", json.dumps(data))


@SETTINGS
@given(st.integers(0, len(FHIR)), st.integers(0, 20), st.text(max_size=10))
def test_corrupted_fhir_bytes(pos, cut, junk):
    _only_clean_errors("fhir", FHIR[:pos] + junk + FHIR[pos + cut:])
