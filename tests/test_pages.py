"""Every page as a phone and a printer see it: Debian's chromium (Playwright) against a real uvicorn
over a real demo store (generated and loaded with the CLI's own code, named patients included).

At 390 px (a phone) and 1280 px (a desktop) no page scrolls sideways and a result's verdict is in the
first screen; printing drops the navigation and buttons and a one-off result fits two A4 pages; the
ANC updates as the user types; the patient list needs a sign-in (`/login?token=`), then searches,
pages, sorts and exports; population counts click through to the persons behind them; and the pages
work with JavaScript switched off. Set LEUKOWATCH_SCREENSHOTS=DIR to also write the docs' screenshots.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from service_helpers import serve
from test_service_web import chromium

from leukowatch.demo.commands import generate_command, load_command
from leukowatch.io.store import open_store
from leukowatch.service import Settings, create_app

pytestmark = pytest.mark.browser

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
SCREENSHOTS = os.environ.get("LEUKOWATCH_SCREENSHOTS")
#: The febrile-neutropenia example of the README, typed into the form in % mode with bands.
FEBRILE = {"sex": "female", "age": "54", "wbc": "2.1", "neutrophils": "15", "bands": "5", "lymphocytes": "64",
           "temperature_c": "38.6", "medications": "Bactrim DS 800/160 mg", "symptoms": "sore throat"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A demo store of 120 generated persons plus the named patients, and a read token for it."""
    from leukowatch.service.auth import create_token

    root = tmp_path_factory.mktemp("pages")
    generate_command(120, 7, str(root / "demo"), 0)
    db = str(root / "store.duckdb")
    load_command(str(root / "demo"), db)
    con = open_store(db)
    try:
        token = create_token(con, "pages-test", "read")
    finally:
        con.close()
    return db, token


@pytest.fixture(scope="module")
def base(store: tuple[str, str]) -> str:
    with serve(create_app(Settings(db=store[0]))) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


def _context(browser, base: str, viewport: dict[str, int], token: str | None = None, js: bool = True):
    context = browser.new_context(base_url=base, viewport=viewport, java_script_enabled=js)
    if token:
        page = context.new_page()
        page.goto(f"/login?token={token}")
        page.close()
    return context


@contextmanager
def _page(browser, base: str, viewport: dict[str, int], token: str | None = None, js: bool = True) -> Iterator:
    """A page in its own browser context (own cookies), closed afterwards."""
    context = _context(browser, base, viewport, token, js)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture(params=[PHONE, DESKTOP], ids=["390px", "1280px"])
def signed_in(request, browser, base: str, store: tuple[str, str]):
    with _page(browser, base, request.param, store[1]) as page:
        yield page


def _no_sideways_scroll(page) -> None:
    width, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width <= inner, f"{page.url} scrolls sideways by {width - inner} px"


def _in_first_screen(page, selector: str) -> None:
    box = page.locator(selector).first.bounding_box()
    assert box is not None and box["y"] + min(box["height"], 40) <= page.viewport_size["height"], (
        f"{selector} is not in the first screen of {page.url}: {box}")


def _fill_form(page, values: dict[str, str], percent: bool = True) -> None:
    page.goto("/")
    if percent:
        page.get_by_label("% of WBC").check()
    for name, value in values.items():
        if name == "sex":
            page.locator("#sex").select_option(value)
        else:
            page.locator(f"#{name}").fill(value)


def _shot(page, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / name), full_page=False)


# ---------------------------------------------------------------------------------------------
# every page, phone and desktop


@pytest.mark.parametrize("path", ["/", "/knowledge", "/patients", "/patients?q=demo", "/patients/demo-amox",
                                  "/patients/demo-2y", "/population", "/worklist", "/login"])
def test_no_page_scrolls_sideways(signed_in, path: str) -> None:
    signed_in.goto(path)
    signed_in.wait_for_load_state("load")
    _no_sideways_scroll(signed_in)


def test_one_off_result_verdict_in_first_screen_and_fits(signed_in) -> None:
    _fill_form(signed_in, FEBRILE)
    signed_in.get_by_role("button", name="Assess").click()
    signed_in.wait_for_selector("#verdict")
    assert signed_in.locator("#verdict").inner_text().startswith("EMERGENCY: febrile neutropenia")
    _in_first_screen(signed_in, "#verdict")
    _no_sideways_scroll(signed_in)
    # bands count in % mode: ANC = 2.1 x (15 + 5) / 100 = 0.42, as the example
    assert "420" in signed_in.locator('tr[data-analyte="neutrophils"]').inner_text()
    text = signed_in.locator("main").inner_text()
    assert "x10^9/L" not in text and "/uL" not in text and "10^9/L" not in text
    if signed_in.viewport_size["width"] == PHONE["width"]:
        _shot(signed_in, "result-phone.png")
    else:
        _shot(signed_in, "service-result.png")


def test_patient_banner_tells_the_history_first(signed_in) -> None:
    signed_in.goto("/patients/demo-amox")
    banner = signed_in.locator(".banner")
    _in_first_screen(signed_in, "#verdict")
    latest = signed_in.locator("#verdict").inner_text()
    assert re.match(r"Latest draw \d{4}-\d\d-\d\d: No leukopenia", latest)
    worst = signed_in.locator("#worst-episode").inner_text()
    assert "neutropenia" in worst and "grade 4" in worst and "recovered" in worst
    assert "amoxicillin" in banner.inner_text()  # the drug-timing hint
    # the plot comes next, the latest draw's detail and sources sit behind an expander
    order = signed_in.evaluate("""() => ['.banner', 'img.plot', '#latest-detail']
        .map(s => document.querySelector(s).getBoundingClientRect().top)""")
    assert order == sorted(order)
    assert signed_in.locator("#latest-detail").get_attribute("open") is None
    _no_sideways_scroll(signed_in)
    if signed_in.viewport_size["width"] == DESKTOP["width"]:
        _shot(signed_in, "patient-page.png")


# ---------------------------------------------------------------------------------------------
# print


def test_print_has_no_navigation_and_a_one_off_result_fits_two_a4_pages(browser, base: str) -> None:
    from pypdf import PdfReader

    with _page(browser, base, DESKTOP) as page:
        _fill_form(page, FEBRILE)
        page.get_by_role("button", name="Assess").click()
        page.wait_for_selector("#verdict")
        page.emulate_media(media="print")
        assert not page.locator("header.site nav").is_visible()
        assert not page.locator(".actions").is_visible()
        assert page.locator("button:visible").count() == 0
        assert page.locator("#verdict").is_visible()
        pdf = page.pdf(format="A4", print_background=True)
        pages = len(PdfReader(io.BytesIO(pdf)).pages)
        assert 1 <= pages <= 2, f"a one-off result prints on {pages} A4 pages"


def test_every_result_has_a_pdf_control_that_works_without_javascript(browser, base: str) -> None:
    with _page(browser, base, PHONE, js=False) as page:
        _fill_form(page, FEBRILE)
        page.get_by_role("button", name="Assess").click()
        page.wait_for_selector("#verdict")
        assert not page.get_by_role("button", name="Print").is_visible()  # needs JavaScript: hidden
        with page.expect_download() as download:
            page.get_by_role("button", name="Download PDF").click()
        data = Path(download.value.path()).read_bytes()
        assert data.startswith(b"%PDF")
        page.locator(".note-box summary").click()
        note = page.locator("#note-text").input_value()
        assert note.startswith("leukowatch") and "febrile" in note.lower() and "×10⁹/L" in note


# ---------------------------------------------------------------------------------------------
# the form


def test_live_anc_as_the_user_types(browser, base: str) -> None:
    with _page(browser, base, PHONE) as page:
        page.goto("/")
        page.get_by_label("% of WBC").check()
        page.locator("#wbc").press_sequentially("2.1")
        page.locator("#neutrophils").press_sequentially("15")
        assert page.locator("#anc-live").inner_text().startswith("0.315 ×10⁹/L")
        page.locator("#bands").press_sequentially("5")
        live = page.locator("#anc-live").inner_text()
        assert live.startswith("0.42 ×10⁹/L (420 cells/µL)") and "(15 + 5)" in live
        page.get_by_label("absolute counts").check()
        page.locator("#neutrophils").fill("0.8")
        page.locator("#neutrophils").press("End")
        assert page.locator("#anc-live").inner_text().startswith("0.8 ×10⁹/L")
        _no_sideways_scroll(page)


def test_scores_appear_only_when_their_items_are_entered(browser, base: str) -> None:
    with _page(browser, base, DESKTOP) as page:
        _fill_form(page, FEBRILE)
        page.get_by_role("button", name="Assess").click()
        page.wait_for_selector("#verdict")
        assert page.locator("#scores-title").count() == 0  # age alone is no MASCC
        _fill_form(page, FEBRILE)
        page.locator(".scores-entry summary").click()
        page.get_by_label("Burden of illness").select_option("mild")
        page.get_by_label("Outpatient when the fever began").select_option("yes")
        page.get_by_role("button", name="Assess").click()
        page.wait_for_selector("#verdict")
        scores = page.locator("[data-score]")
        assert scores.count() == 1 and "MASCC" in scores.inner_text()


def test_keyboard_only_form_with_the_scores_section(browser, base: str) -> None:
    with _page(browser, base, PHONE) as page:
        page.goto("/")
        page.focus("#wbc")
        page.keyboard.type("6.5")
        page.keyboard.press("Tab")
        page.keyboard.type("3.9")
        page.focus(".scores-entry summary")
        page.keyboard.press("Enter")
        assert page.locator(".scores-entry").get_attribute("open") is not None
        page.focus("#submit")
        page.keyboard.press("Enter")
        page.wait_for_selector("#verdict")
        assert page.locator("#verdict").inner_text().startswith("No leukopenia")


# ---------------------------------------------------------------------------------------------
# sign-in, the patient list, the population


def test_patient_list_needs_a_sign_in(browser, base: str) -> None:
    with _page(browser, base, PHONE) as page:
        page.goto("/patients")
        assert "/login" in page.url
        assert httpx.get(f"{base}/patients.csv", follow_redirects=False).status_code in (302, 303, 307, 401)


def test_search_sort_and_paging_with_the_keyboard(signed_in) -> None:
    page = signed_in
    page.goto("/patients")
    status = page.locator("#list-status").inner_text()
    total = int(re.search(r"of ([\d,]+) patients", status).group(1).replace(",", ""))
    assert total >= 124  # 120 generated + 4 named
    assert page.locator("table.patients tbody tr").count() == 50
    page.get_by_role("link", name="Next →").click()
    assert "Page 2 of" in page.locator(".pager").inner_text()
    assert page.locator("table.patients tbody tr").count() == 50
    page.focus("#q")
    page.keyboard.type("demo-")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"q=demo-"))
    ids = page.locator("table.patients tbody th").all_inner_texts()
    assert sorted(ids) == ["demo-2y", "demo-amox", "demo-cloz", "demo-cyclic"]
    findings = page.locator('tr:has(a:text-is("demo-amox")) .findings-cell').inner_text()
    assert "neutropenia G4" in findings
    page.get_by_role("link", name=re.compile("^Findings")).click()  # worst grade first
    assert page.locator("th[aria-sort]").get_attribute("aria-sort") == "descending"
    assert "G4" in page.locator("table.patients tbody tr").first.locator(".findings-cell").inner_text()
    _no_sideways_scroll(page)
    if page.viewport_size["width"] == DESKTOP["width"]:
        _shot(page, "patients-list.png")


def test_csv_export_is_the_selection(signed_in, base: str) -> None:
    signed_in.goto("/patients?q=demo-")
    href = signed_in.get_by_role("link", name="Export CSV").get_attribute("href")
    response = signed_in.request.get(href)
    assert response.ok and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text())))
    assert sorted(r["patient_id"] for r in rows) == ["demo-2y", "demo-amox", "demo-cloz", "demo-cyclic"]


def test_population_counts_click_through_to_the_persons(signed_in) -> None:
    page = signed_in
    page.goto("/population")
    card = page.locator('a.stat[data-flag="cyclic"]')
    expected = int(card.locator(".n").inner_text().replace(",", ""))
    card.click()
    page.wait_for_url(re.compile(r"flag=cyclic"))
    status = page.locator("#list-status").inner_text()
    assert status.startswith(f"{expected:,} of"), status
    page.goto("/population")
    persons = page.locator('tr[data-finding="neutropenia"][data-grade="4"] td a')
    n = int(persons.inner_text().replace(",", ""))
    persons.click()
    assert page.locator("#list-status").inner_text().startswith(f"{n:,} of")
    _no_sideways_scroll(page)


def test_pages_work_without_javascript(browser, base: str, store: tuple[str, str]) -> None:
    with _page(browser, base, PHONE, store[1], js=False) as page:
        page.goto("/patients?q=demo-cloz")
        page.get_by_role("link", name="demo-cloz").click()
        assert page.locator("#verdict").inner_text().startswith("Latest draw")
        assert not page.get_by_role("button", name="Copy for the note").is_visible()
        page.goto("/")
        page.locator("#wbc").fill("2.1")
        page.locator("#neutrophils").fill("0.42")
        page.get_by_role("button", name="Assess").click()
        assert page.locator("#verdict").inner_text().startswith("neutropenia") or "neutropenia" in page.locator(
            "#verdict").inner_text()


def test_every_page_is_local_and_has_a_favicon(base: str) -> None:
    html = httpx.get(f"{base}/").text
    assert '<link rel="icon" href="/static/favicon.svg"' in html
    assert httpx.get(f"{base}/static/favicon.svg").headers["content-type"].startswith("image/svg")
    assert "<script>" not in html and " onclick=" not in html  # all script in /static/app.js (CSP)


def test_form_screenshot_for_the_docs(browser, base: str) -> None:
    with _page(browser, base, DESKTOP) as page:
        _fill_form(page, FEBRILE)
        assert page.locator("#anc-live").inner_text().startswith("0.42")
        page.evaluate("document.querySelector('#cbc-form fieldset:nth-of-type(2)').scrollIntoView()")
        _shot(page, "service-form.png")


def test_api_docs_link_back_to_the_app(browser, base: str) -> None:
    with _page(browser, base, PHONE) as page:
        page.goto("/docs")
        page.get_by_role("link", name="← back to leukowatch").click()
        page.wait_for_selector("#cbc-form")


def test_copy_for_the_note_puts_the_plain_text_on_the_clipboard(browser, base: str) -> None:
    context = _context(browser, base, DESKTOP)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    try:
        page = context.new_page()
        _fill_form(page, FEBRILE)
        page.get_by_role("button", name="Assess").click()
        page.wait_for_selector("#verdict")
        page.get_by_role("button", name="Copy for the note").click()
        page.get_by_role("button", name="Copied").wait_for()
        copied = page.evaluate("navigator.clipboard.readText()")
        assert copied == page.locator("#note-text").input_value()
        assert copied.startswith("leukowatch") and not re.search(r"</?[a-z]+[ >]", copied)  # plain text, no markup
    finally:
        context.close()


def test_source_links_in_alerts_keep_the_alert_colour(browser, base: str) -> None:
    with _page(browser, base, DESKTOP) as page:
        _fill_form(page, FEBRILE)
        page.get_by_role("button", name="Assess").click()
        page.wait_for_selector("#verdict")
        link = page.locator(".alert-critical .source a").first
        assert link.get_attribute("href").startswith("https://")
        colours = link.evaluate("a => [getComputedStyle(a).color, getComputedStyle(a.closest('.alert')).color]")
        assert colours[0] == colours[1]  # white on red, not blue on red


def test_keyboard_reaches_the_detail_and_the_population_links(signed_in) -> None:
    page = signed_in
    page.goto("/patients/demo-cloz")
    page.focus("#latest-detail summary")
    page.keyboard.press("Enter")
    assert page.locator("#latest-detail").get_attribute("open") is not None
    assert page.locator('.findings li[data-code="neutropenia"], #counts-title').first.is_visible()
    page.goto("/population")
    page.focus('a.stat[data-flag="chronic_neutropenia"]')
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"flag=chronic_neutropenia"))
    assert "flagged chronic" in page.locator("#list-status").inner_text()
