"""The web page in a real browser (Debian's chromium driven by Playwright) against a real uvicorn:
fill the CBC form with the keyboard and mouse, submit, read the verdict and the alert; a bad field
shows its message next to it."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_helpers import serve

from leukowatch.service import Settings, create_app

CHROMIUM = os.environ.get("LEUKOWATCH_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def base() -> str:
    with serve(create_app(Settings())) as url:
        yield url


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """Debian's chromium under Playwright (a skip when it is missing); one per test module."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} missing (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser, base: str):
    context = browser.new_context(base_url=base)
    pg = context.new_page()
    requests: list[str] = []
    pg.on("request", lambda r: requests.append(r.url))
    yield pg
    context.close()
    assert all(u.startswith(base) or u.startswith("data:") for u in requests), "page loaded a non-local resource"


def test_fill_form_and_see_verdict_and_febrile_neutropenia_alert(page) -> None:
    page.goto("/")
    page.get_by_label("Sex").select_option("female")
    page.get_by_label("Age (years)").fill("54")
    page.get_by_label("% of WBC").check()
    page.get_by_label("White blood cells (WBC)").fill("2.1")
    page.get_by_label("Neutrophils (ANC; in % mode segmented)").fill("20")
    page.get_by_label("Lymphocytes").fill("64")
    page.get_by_label("Temperature (°C)").fill("38.6")
    page.get_by_label("Medicines (one per line)").fill("Bactrim DS 800/160 mg\nclozapine 100 mg")
    page.get_by_label("Symptoms (one per line)").fill("sore throat")
    page.get_by_role("button", name="Assess").click()
    page.wait_for_selector("#verdict")
    verdict = page.locator("#verdict").inner_text()
    assert verdict.startswith("EMERGENCY: febrile neutropenia")
    assert "neutropenia (CTCAE v5.0 grade 4" in verdict
    alert = page.locator('.alert[data-code="febrile_neutropenia"]')
    assert alert.count() == 1 and "CRITICAL" in alert.inner_text()
    assert alert.get_attribute("role") == "alert"
    assert page.locator('tr[data-analyte="neutrophils"] .flag').inner_text() == "LOW"
    assert "420" in page.locator('tr[data-analyte="neutrophils"]').inner_text()
    assert "sulfamethoxazole/trimethoprim" in page.locator(".causes").inner_text()
    assert page.locator('.findings li[data-code="neutropenia"] .source').count() == 1


def test_bad_field_message_sits_next_to_the_field(page) -> None:
    page.goto("/")
    page.get_by_label("White blood cells (WBC)").fill("2,1,5")
    page.get_by_label("Temperature (°C)").fill("52")
    page.get_by_role("button", name="Assess").click()
    page.wait_for_selector("#wbc-error")
    wbc = page.locator("#wbc")
    assert wbc.get_attribute("aria-invalid") == "true"
    assert "wbc-error" in wbc.get_attribute("aria-describedby")
    assert "not a number" in page.locator("#wbc-error").inner_text()
    assert page.locator("#wbc").input_value() == "2,1,5"  # what the user typed is kept
    assert page.locator(".error-summary").is_visible()


def test_pages_are_served_without_a_browser(base: str) -> None:
    assert httpx.get(f"{base}/static/style.css").status_code == 200
    html = httpx.get(f"{base}/").text
    links = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert links and all(u.startswith(("/", "#")) for u in links), links  # no CDN, no absolute host
    assert httpx.get(f"{base}/knowledge").status_code == 200
