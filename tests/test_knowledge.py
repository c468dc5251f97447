"""Knowledge: validated at load (file, key, problem), frozen, a site overlay merged on top with a
diff and its own version, and the rules judging with the Knowledge they are given."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from leukowatch.assess import assess
from leukowatch.knowledge import KnowledgeError, active, load_knowledge, summary, use

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "examples" / "site-overlay"
MAN_WBC_45 = {"patient": {"sex": "male", "age_years": 40},
              "observations": [{"analyte": "wbc", "value": 4.5, "unit": "10^9/L"}]}


@pytest.fixture(autouse=True)
def _bundled_after():
    """Each test leaves the bundled tables active, whatever it switched to."""
    yield
    use(load_knowledge())


def overlay(tmp_path: Path, **files: str) -> Path:
    for name, text in files.items():
        (tmp_path / f"{name}.toml").write_text(text, encoding="utf-8")
    return tmp_path


def load_error(folder: Path) -> KnowledgeError:
    with pytest.raises(KnowledgeError) as info:
        load_knowledge(folder)
    return info.value


def test_bundled_tables_load_and_are_frozen() -> None:
    k = load_knowledge()
    assert k is load_knowledge()  # loaded once
    assert k.version.startswith("lw-") and k.overlay is None and k.changes == ()
    profiles = k.table("profiles")
    with pytest.raises(TypeError):
        profiles["default"] = "article"  # type: ignore[index]
    rows = profiles["profiles"]["standard"]["ranges"]
    assert isinstance(rows, tuple)
    with pytest.raises(TypeError):
        rows[0]["low"] = 0.1  # type: ignore[index]
    with pytest.raises(AttributeError):
        k.version = "lw-other"  # type: ignore[misc]
    with pytest.raises(KeyError, match="unknown knowledge table 'nope'"):
        k.table("nope")


def test_a_row_without_source_names_the_overlay_file_and_key(tmp_path: Path) -> None:
    folder = overlay(tmp_path, profiles='[[profiles.standard.ranges]]\nanalyte = "wbc"\nsex = "male"\nlow = 4.0\n')
    err = load_error(folder)
    assert err.file == str(folder / "profiles.toml")
    assert err.key == "profiles.standard.ranges[analyte=wbc, sex=male]"
    assert "no source" in err.problem


def test_low_not_below_high_is_refused(tmp_path: Path) -> None:
    folder = overlay(tmp_path, profiles='[[profiles.standard.ranges]]\nanalyte = "wbc"\nsex = "male"\n'
                                        'low = 12.0\nsource = "site lab"\n')  # bundled high 10.0 stays
    err = load_error(folder)
    assert err.file == str(folder / "profiles.toml")
    assert err.key == "profiles.standard.ranges[analyte=wbc, sex=male].low"
    assert err.problem == "low 12.0 must be below high 10.0"


def test_grades_out_of_order_are_refused(tmp_path: Path) -> None:
    # CTCAE v5 WBC grade 3 is < 2.0; a site writing 0.5 puts it below grade 4's < 1.0
    folder = overlay(tmp_path, criteria='[[rows]]\nversion = "ctcae-v5"\nanalyte = "wbc"\ndirection = "low"\n'
                                        'grade = 3\nbelow = 0.5\nsource = "site"\n')
    err = load_error(folder)
    assert err.file == str(folder / "criteria.toml")
    assert err.key == "rows[version=ctcae-v5, analyte=wbc, direction=low, grade=3]"
    assert "grades out of order" in err.problem


@pytest.mark.parametrize(("table", "text", "key_end", "problem"), [
    ("profiles", '[[profiles.standard.ranges]]\nanalyte = "wbc"\nsex = "male"\nlow = "4.0"\nsource = "s"\n',
     "ranges[analyte=wbc, sex=male].low", "must be a number, not '4.0'"),
    ("alerts", '[[alert]]\ncode = "hyperleukocytosis"\nvariant = "default"\nlevel = "urgent"\nsource = "s"\n',
     "alert[code=hyperleukocytosis, variant=default].level", "must be critical, warning or info, not 'urgent'"),
    ("drugs", '[[drugs]]\ngeneric = "metamizole"\nchemotherapy = "no"\nsource = "s"\n',
     "drugs[generic=metamizole].chemotherapy", "must be true or false, not 'no'"),
    ("drugs", '[[drugs]]\ngeneric = "newdrug"\nclasses = ["nonsense"]\nsource = "s"\n',
     "drugs[generic=newdrug].classes", "unknown class 'nonsense'"),
    ("profiles", '[[profiles.standard.ranges]]\nanalyte = "wbc"\nsex = "male"\nlwo = 4.0\nsource = "s"\n',
     "ranges[analyte=wbc, sex=male].lwo", "unknown key; known: age_max, age_min, analyte"),
])
def test_wrong_types_are_refused(tmp_path: Path, table: str, text: str, key_end: str, problem: str) -> None:
    err = load_error(overlay(tmp_path, **{table: text}))
    assert err.file == str(tmp_path / f"{table}.toml")
    assert err.key.endswith(key_end)
    assert err.problem.startswith(problem)


def test_unknown_table_and_bad_toml_are_refused(tmp_path: Path) -> None:
    err = load_error(overlay(tmp_path / "", ranges="x = 1\n"))
    assert err.file == str(tmp_path / "ranges.toml") and "no knowledge table is called 'ranges'" in err.problem
    (tmp_path / "ranges.toml").unlink()
    err = load_error(overlay(tmp_path, drugs="[[drugs]\n"))
    assert err.file == str(tmp_path / "drugs.toml") and err.problem.startswith("not valid TOML")


def test_site_overlay_merges_and_lists_its_changes() -> None:
    bundled, site = load_knowledge(), load_knowledge(SITE)
    assert site.version != bundled.version and site.overlay == str(SITE)
    assert load_knowledge(SITE) is site
    changed = {(Path(c.file).name, c.key): (c.old, c.new) for c in site.changes}
    assert changed[("profiles.toml", "profiles.standard.ranges[analyte=wbc, sex=male].low")] == (5.0, 4.0)
    assert changed[("profiles.toml", "profiles.standard.ranges[analyte=wbc, sex=male].high")] == (10.0, 11.0)
    old, new = changed[("drugs.toml", "drugs[generic=metamizole].brands")]
    assert "Berlosin" in new and "Berlosin" not in old
    # the bundled Knowledge is untouched by the merge
    metamizole = next(d for d in bundled.table("drugs")["drugs"] if d["generic"] == "metamizole")
    assert "Berlosin" not in metamizole["brands"]


def test_an_added_range_row_goes_first(tmp_path: Path) -> None:
    """A new site row (here for everyone aged 18-200) wins over the bundled sex rows after it."""
    folder = overlay(tmp_path, profiles='[[profiles.standard.ranges]]\nanalyte = "wbc"\nage_min = 18.0\n'
                                        'age_max = 200.0\nlow = 4.2\nhigh = 10.8\nsource = "site lab"\n')
    k = load_knowledge(folder)
    assert k.table("profiles")["profiles"]["standard"]["ranges"][0]["low"] == 4.2
    assert [c.old for c in k.changes] == [None]  # added, not changed
    a = assess(MAN_WBC_45, knowledge=k)
    assert a.counts["wbc"].reference_range.low == 4.2 and a.counts["wbc"].flag == "normal"


def test_assess_judges_with_the_knowledge_it_is_given() -> None:
    bundled, site = load_knowledge(), load_knowledge(SITE)
    low = assess(MAN_WBC_45, knowledge=bundled)
    assert low.counts["wbc"].flag == "low" and [f.code for f in low.findings] == ["leukopenia"]
    assert low.knowledge_version == bundled.version
    normal = assess(MAN_WBC_45, knowledge=site)
    assert normal.counts["wbc"].flag == "normal" and normal.findings == []
    assert normal.knowledge_version == site.version
    assert "site laboratory" in normal.counts["wbc"].low_source
    assert active() is site
    assert assess(MAN_WBC_45, knowledge=bundled).counts["wbc"].flag == "low"  # derived caches follow


def test_brand_name_from_the_overlay_is_recognised() -> None:
    request = {**MAN_WBC_45, "medications": [{"name": "Berlosin"}]}
    assert assess(request, knowledge=load_knowledge()).possible_causes["medications"] == []
    meds = assess(request, knowledge=load_knowledge(SITE)).possible_causes["medications"]
    assert [m.generic for m in meds] == ["metamizole"]


def test_summary_lists_alerts_vocabulary_and_site_changes() -> None:
    s = summary(load_knowledge(SITE))
    json.dumps(s)  # plain data
    assert {(r["code"], r["variant"]) for r in s["alerts"]} >= {("hyperleukocytosis", "default")}
    assert s["vocabulary"]["findings"]["neutropenia"]["analyte"] == "neutrophils"
    assert s["overlay"] == str(SITE) and len(s["site_changes"]) == 5


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "leukowatch.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)


def test_cli_diff_and_assess_with_the_overlay() -> None:
    diff = _cli("knowledge", "--diff", "--knowledge", "examples/site-overlay")
    assert diff.returncode == 0, diff.stderr
    assert "profiles.toml  profiles.standard.ranges[analyte=wbc, sex=male].low: 5.0 -> 4.0" in diff.stdout
    version = load_knowledge(SITE).version
    assert f"knowledge {version}: overlay {SITE}" in diff.stdout
    out = _cli("--knowledge", "examples/site-overlay", "assess", "--wbc", "4.5", "--sex", "male", "--age", "40",
               "--json")
    assert out.returncode == 0, out.stderr
    a = json.loads(out.stdout)
    assert a["knowledge_version"] == version and a["counts"]["wbc"]["flag"] == "normal"


def test_cli_env_var_and_a_bad_overlay(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "LEUKOWATCH_KNOWLEDGE": str(SITE)}
    out = _cli("assess", "--wbc", "4.5", "--sex", "male", "--age", "40", "--json", env=env)
    assert json.loads(out.stdout)["knowledge_version"] == load_knowledge(SITE).version
    folder = overlay(tmp_path, alerts='[[alert]]\ncode = "hyperleukocytosis"\nvariant = "default"\nlevel = "high"\n'
                                      'source = "site"\n')
    refused = _cli("serve", "--port", "0", "--db", str(tmp_path / "s.duckdb"),
                   env={**os.environ, "LEUKOWATCH_KNOWLEDGE": str(folder)})
    assert refused.returncode == 2 and "alert[code=hyperleukocytosis, variant=default].level" in refused.stderr
    bad = _cli("assess", "--wbc", "4.5", "--knowledge", str(folder))
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip() == (f"error: knowledge: {folder / 'alerts.toml'}: alert[code=hyperleukocytosis, "
                                  "variant=default].level: must be critical, warning or info, not 'high'")


def test_vocabulary_agrees_with_the_finding_codes_and_rules() -> None:
    from leukowatch import vocabulary
    from leukowatch.model import FINDING_CODES
    from leukowatch.rules.findings import HIGH_FINDING, LOW_FINDING, UNGRADED

    words = vocabulary.findings()
    assert set(words) == set(FINDING_CODES)
    for analyte, code in LOW_FINDING.items():
        assert (words[code].analyte, words[code].direction) == (analyte, "low"), code
    for analyte, code in HIGH_FINDING.items():
        assert (words[code].analyte, words[code].direction) == (analyte, "high"), code
    assert {c for c, w in words.items() if not w.graded} == set(UNGRADED)
    assert vocabulary.low_white() == {"leukopenia", "neutropenia", "lymphocytopenia", "monocytopenia"}
    assert vocabulary.informational() == {"eosinopenia", "basopenia"}


def test_a_site_can_reword_a_finding_and_every_output_follows(tmp_path: Path) -> None:
    folder = overlay(tmp_path, vocabulary='[findings.leukopenia]\nplain = "white cells are below our range"\n'
                                          'source = "site patient-information group"\n')
    a = assess(MAN_WBC_45, knowledge=load_knowledge(folder))
    assert a.patient_summary[0].startswith("Your white cells are below our range:")
    a = assess(MAN_WBC_45, knowledge=load_knowledge())
    assert a.patient_summary[0].startswith("Your white blood cell count is low (leukopenia):")


def test_serve_judges_with_the_overlay(tmp_path: Path) -> None:
    """A real `leukowatch serve --knowledge DIR` on loopback: /api/knowledge and /api/assess carry the
    site's version and range."""
    import time

    import httpx
    from service_helpers import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "leukowatch.cli", "serve", "--db", str(tmp_path / "s.duckdb"),
                             "--port", str(port), "--knowledge", str(SITE)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                k = httpx.get(f"{url}/api/knowledge", timeout=2).json()
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        site = load_knowledge(SITE)
        assert k["knowledge_version"] == site.version and k["overlay"] == str(SITE)
        resp = httpx.post(f"{url}/api/assess", json=MAN_WBC_45, timeout=10)
        assert resp.status_code == 200, resp.text
        a = resp.json()
        assert a["knowledge_version"] == site.version and a["counts"]["wbc"]["flag"] == "normal"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_history_carries_the_knowledge_version() -> None:
    from leukowatch.history import build_history

    request = {"patient": {"sex": "male", "age_years": 40},
               "observations": [{"analyte": "wbc", "value": 4.5, "unit": "10^9/L", "time": "2026-01-05"},
                                {"analyte": "wbc", "value": 4.4, "unit": "10^9/L", "time": "2026-03-05"}]}
    site = load_knowledge(SITE)
    h = build_history(request, knowledge=site)
    assert h.to_dict()["knowledge_version"] == site.version and h.episodes == {}
    h = build_history(request, knowledge=load_knowledge())
    assert h.knowledge_version == load_knowledge().version and list(h.episodes) == ["leukopenia"]


def test_a_site_sets_alert_levels_and_regimen_hold_thresholds(tmp_path: Path) -> None:
    folder = overlay(
        tmp_path,
        alerts='[[alert]]\ncode = "hyperleukocytosis"\nvariant = "default"\nlevel = "warning"\n'
               'source = "site haematology protocol: leukostasis review within 4 hours"\n',
        treatment='[chemotherapy_hold.regimens.docetaxel]\nneutrophils = 1.0\n'
                  'source = "site oncology protocol: docetaxel proceeds from ANC 1.0"\n')
    high = {"patient": {"sex": "female", "age_years": 60},
            "observations": [{"analyte": "wbc", "value": 150.0, "unit": "10^9/L"}]}
    chemo = {"patient": {"sex": "female", "age_years": 60},
             "observations": [{"analyte": "neutrophils", "value": 1.2, "unit": "10^9/L"}],
             "chemotherapy": {"active": True, "regimen": "docetaxel"}}
    bundled, site = load_knowledge(), load_knowledge(folder)
    assert [(a.code, a.level) for a in assess(high, knowledge=bundled).alerts] == [("hyperleukocytosis", "critical")]
    assert [(a.code, a.level) for a in assess(high, knowledge=site).alerts] == [("hyperleukocytosis", "warning")]
    assert "chemotherapy_hold" in {a.code for a in assess(chemo, knowledge=bundled).alerts}
    assert "chemotherapy_hold" not in {a.code for a in assess(chemo, knowledge=site).alerts}


def test_screen_judges_with_the_knowledge_it_is_given(tmp_path: Path) -> None:
    """The population engine reads the same Knowledge: the site's range flags the same WBC normal."""
    from leukowatch.population.screen import screen

    csv = tmp_path / "labs.csv"
    csv.write_text("patient_id,sex,birth_date,time,analyte,value,unit\n"
                   "M1,male,1980-01-01,2026-10-01T08:00:00Z,wbc,4.5,10*9/L\n", encoding="utf-8")
    for k, flag, low in ((load_knowledge(SITE), "normal", 4.0), (load_knowledge(), "low", 5.0)):
        r = screen([str(csv)], tmp_path / k.version, knowledge=k)
        graded = r.table("graded").to_pylist()
        assert [(g["analyte"], g["flag"], g["low"]) for g in graded] == [("wbc", flag, low)]
        assert r.summary["knowledge_version"] == k.version
