"""Name the field when a JSON body crashed the readers instead of being refused by them.

Fuzzing found bodies that raised deep inside the parsers and became 500s: integers beyond float
range or longer than Python's 4,300-digit limit, `1e306` counts that overflow on unit conversion,
lone surrogates (`"\\ud800"`) that cannot be encoded in the answer, and an object or list where a
string is expected (`profile`, `criteria`). The hot path stays untouched: only after such a crash
does `explain(body)` re-read the body tolerantly and return an `InputError` naming the first
offending field (JSON path), which the service answers as 422.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..model import InputError

#: Larger magnitudes than any count, age or temperature in any unit; past it a number is garbage.
MAX_MAGNITUDE = 1e12
#: Keys of the project request that must be strings when present.
STRING_KEYS = ("profile", "criteria")
#: What a crash inside the readers may look like (InputError, a ValueError, is re-raised as is).
CRASHES = (ValueError, OverflowError, TypeError, AttributeError, KeyError, IndexError, UnicodeError, RecursionError)


class _BigInt(str):
    """An integer literal too long to convert: kept as its text so the walk can name its field."""


def _int(text: str) -> Any:
    return _BigInt(text) if len(text.lstrip("-")) > 15 else int(text)


def loads(text: str) -> Any:
    """`json.loads` that never raises for a long integer (it becomes a `_BigInt`)."""
    return json.loads(text, parse_int=_int)


def _has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def find_problem(data: Any, path: str = "") -> InputError | None:
    """The first value in `data` no reader can take, as an InputError naming its JSON path."""
    if path == "" and isinstance(data, dict):
        for key in STRING_KEYS:
            if key in data and data[key] is not None and not isinstance(data[key], str):
                kind = {"dict": "object", "list": "array"}.get(type(data[key]).__name__, type(data[key]).__name__)
                return InputError(key, f"expected a string, got a JSON {kind}")
    if isinstance(data, _BigInt):
        return InputError(path or "body", "number too large")
    if isinstance(data, bool):
        return None
    if isinstance(data, (int, float)):
        if isinstance(data, float) and not math.isfinite(data) or abs(data) > MAX_MAGNITUDE:
            return InputError(path or "body", "number out of range")
        return None
    if isinstance(data, str):
        return InputError(path or "body", "invalid text (a lone surrogate)") if _has_lone_surrogate(data) else None
    if isinstance(data, dict):
        items = data.items()
    elif isinstance(data, list):
        items = ((f"[{i}]", v) for i, v in enumerate(data))  # type: ignore[assignment]
    else:
        return None
    for key, value in items:
        key = str(key)
        if _has_lone_surrogate(key):
            return InputError(path or "body", "invalid text in a key (a lone surrogate)")
        child = f"{path}{key}" if key.startswith("[") else f"{path}.{key}" if path else key
        found = find_problem(value, child)
        if found is not None:
            return found
    return None


def explain(text: str) -> InputError | None:
    """Why a JSON body crashed the readers, naming the field; None when the walk finds nothing."""
    try:
        data = loads(text)
    except (ValueError, RecursionError):
        return None
    return find_problem(data)


@contextmanager
def explained(body: bytes) -> Iterator[None]:
    """Turn a crash inside the readers into an InputError naming the field, when `explain` finds one."""
    try:
        yield
    except InputError:
        raise
    except CRASHES as exc:
        found = explain(body.decode("utf-8", "replace"))
        if found is None:
            raise
        raise found from exc
