"""The `leukowatch` command as a user runs it: real subprocesses, exit codes, messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "src" / "leukowatch" / "examples" / "febrile-neutropenia.json"


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "leukowatch.cli", *args], input=stdin, capture_output=True,
                          text=True, timeout=120)


def test_assess_file_json() -> None:
    p = run("assess", str(EXAMPLE), "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["alerts"][0]["code"] == "febrile_neutropenia"
    assert d["counts"]["neutrophils"]["derived"] is True


def test_assess_flags_human_report() -> None:
    p = run("assess", "--sex", "female", "--age", "54", "--wbc", "2.1", "--neutrophils", "0.7", "--med",
            "Bactrim DS", "--symptom", "sore throat", "--temp", "38.6", "--no-color")
    assert p.returncode == 0, p.stderr
    first = p.stdout.splitlines()[0]
    assert first.startswith("leukopenia") and "neutropenia" in p.stdout
    assert "sulfamethoxazole/trimethoprim" in p.stdout and "Decision support, not a diagnosis" in p.stdout
    assert "700" in p.stdout and "×10⁹/L" in p.stdout and "/µL" in p.stdout  # both units, one notation
    assert "10^9/L" not in p.stdout and "/uL" not in p.stdout


def test_assess_stdin_and_profile_flag() -> None:
    req = {"patient": {"sex": "female", "age_years": 30},
           "observations": [{"analyte": "neutrophils", "value": 1200, "unit": "cells/uL"}]}
    p = run("assess", "-", "--json", "--profile", "article", stdin=json.dumps(req))
    assert p.returncode == 0 and json.loads(p.stdout)["findings"] == []
    p = run("assess", "-", "--json", stdin=json.dumps(req))
    assert json.loads(p.stdout)["findings"][0]["code"] == "neutropenia"


@pytest.mark.parametrize(("args", "stdin", "message"), [
    (("assess", "--wbc", "2", "--unit", "bananas"), None, "observations[0].unit: unknown unit 'bananas'"),
    (("assess", "-"), "{not json", "-: invalid JSON at line 1"),
    (("assess", "-"), '{"observations": []}', "observations: expected a non-empty list"),
    (("assess", "missing.json"), None, "missing.json: file not found"),
    (("assess",), None, "give a FILE"),
    (("assess", "--wbc", "3", "--profile", "nope"), None, "profile: unknown profile 'nope'"),
    (("assess", "--wbc", "3", "--criteria", "ctcae-v9"), None, "criteria: unknown criteria"),
    (("assess", "--wbc", "abc"), None, "invalid float value"),
    (("frobnicate",), None, "invalid choice"),
])
def test_bad_input_exit_2_without_traceback(args: tuple[str, ...], stdin: str | None, message: str) -> None:
    p = run(*args, stdin=stdin)
    assert p.returncode == 2
    assert message in p.stderr
    assert "Traceback" not in p.stderr


def test_knowledge_lists_everything() -> None:
    p = run("knowledge", "--json")
    assert p.returncode == 0
    d = json.loads(p.stdout)
    assert {"standard", "article", "duffy_null"} <= set(d["profiles"])
    assert {"ctcae-v5", "ctcae-v6"} <= set(d["criteria"])
    assert any(x["generic"] == "clozapine" for x in d["drugs"])
    assert any(x["name"] == "lupus" for x in d["conditions"])
    p = run("knowledge", "drugs")
    assert p.returncode == 0 and "cephalexin" in p.stdout


def test_assess_imports_nothing_heavy() -> None:
    code = ("import sys; from leukowatch.cli import main; "
            f"main(['assess', {str(EXAMPLE)!r}]); main(['assess', {str(EXAMPLE)!r}, '--json']); "
            "heavy = [m for m in ('pandas', 'duckdb', 'pyspark', 'fastapi', 'matplotlib', 'pyarrow', 'numpy') "
            "if m in sys.modules]; print('HEAVY', heavy, file=sys.stderr)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "HEAVY []" in p.stderr


@pytest.mark.parametrize("command", ["assess", "knowledge", "screen"])
def test_help_prints(command: str) -> None:
    """argparse %-formats help text, so a bare "%" in a help string used to crash `--help`."""
    p = run(command, "--help")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(f"usage: leukowatch {command}")


@pytest.mark.parametrize(("args", "problem"), [
    (("serve", "--port", "99999"), "is not a TCP port (0-65535)"),
    (("listen", "--port", "70000"), "is not a TCP port (0-65535)"),
    (("serve", "--mllp-port", "-1"), "is not a TCP port (0-65535)"),
    (("listen", "--max-message-bytes", "0"), "must be at least 1"),
])
def test_a_listener_setting_out_of_range_is_a_usage_error(args: tuple[str, ...], problem: str, tmp_path: Path) -> None:
    """Was a traceback from bind() (listen), a server announcing port 99999 (serve), or a listener
    that closed every connection without an ACK (a message limit of 0)."""
    p = run(*args, "--db", str(tmp_path / "s.duckdb"))
    assert p.returncode == 2 and problem in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("flag", ["--port", "--mllp-port"])
def test_serve_on_a_port_in_use_exits_2_naming_the_flag(flag: str, tmp_path: Path) -> None:
    """Was uvicorn's log line (or a lifespan traceback for the MLLP port) and exit code 3."""
    import socket

    with socket.socket() as taken, socket.socket() as free:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        free.bind(("127.0.0.1", 0))
        ports = {"--port": str(free.getsockname()[1]), "--mllp-port": str(free.getsockname()[1])}
        ports[flag] = str(taken.getsockname()[1])
        free.close()
        if flag == "--port":
            ports["--mllp-port"] = "0"
        p = run("serve", "--db", str(tmp_path / "s.duckdb"), "--port", ports["--port"], "--mllp-port", ports["--mllp-port"])
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert f"error: {flag}: cannot listen on 127.0.0.1:{ports[flag]}" in p.stderr


@pytest.mark.parametrize(("name", "value"), [("LEUKOWATCH_MAX_BODY_BYTES", "0"), ("LEUKOWATCH_MAX_BODY_BYTES", "abc"),
                                             ("LEUKOWATCH_MAX_RESULTS", "-5"), ("LEUKOWATCH_FHIR_TIMEOUT_S", "nan")])
def test_serve_refuses_a_limit_in_the_environment_that_is_not_positive(name: str, value: str, tmp_path: Path) -> None:
    """0 or -5 started a service that answered every request 413; 'abc' stopped it without naming the setting."""
    import os

    p = subprocess.run([sys.executable, "-m", "leukowatch.cli", "serve", "--db", str(tmp_path / "s.duckdb"), "--port", "0"],
                       env=os.environ | {name: value}, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and f"{name}: expected a positive" in p.stderr and repr(value) in p.stderr
