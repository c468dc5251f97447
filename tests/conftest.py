"""Shared test helpers: build requests the way users write them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "samples"


def cbc(**counts: float) -> list[dict[str, Any]]:
    """Observations in 10^9/L (hemoglobin in g/dL) from keyword counts."""
    units = {"hemoglobin": "g/dL"}
    return [{"analyte": a, "value": v, "unit": units.get(a, "10*9/L")} for a, v in counts.items()]


def request(sex: str = "female", age: float = 54, **counts: float) -> dict[str, Any]:
    return {"patient": {"sex": sex, "age_years": age}, "observations": cbc(**counts)}


@pytest.fixture
def samples_dir() -> Path:
    if not SAMPLES.is_dir():
        pytest.skip("shared/samples not present")
    return SAMPLES
