"""The Assessment as JSON (docs/contracts.md): what `--json` prints and `POST /api/assess` returns."""

from __future__ import annotations

import json as _json
from typing import Any

from ..model import Assessment


def assessment_dict(a: Assessment) -> dict[str, Any]:
    d = a.to_dict()
    for key in ("patient", "time"):
        d.pop(key, None)
    return d


def dumps(a: Assessment, indent: int | None = 2) -> str:
    return _json.dumps(assessment_dict(a), indent=indent, ensure_ascii=False)
