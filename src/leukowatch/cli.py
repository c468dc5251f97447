"""`leukowatch …`: parse arguments, call the library, render. Nothing clinical happens here.

Heavy libraries (duckdb, pandas, pyspark, fastapi, matplotlib) are imported inside the command that
needs them, so `leukowatch assess` starts fast. Bad input exits with code 2 and one line naming the
field and the problem; no traceback reaches the user.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .model import InputError

EXIT_OK, EXIT_BAD_INPUT = 0, 2

#: Count flags of `assess` -> analyte (values in --unit, default 10^9/L).
_COUNT_FLAGS = {
    "wbc": "wbc", "neutrophils": "neutrophils", "anc": "neutrophils", "bands": "bands",
    "lymphocytes": "lymphocytes", "monocytes": "monocytes", "eosinophils": "eosinophils",
    "basophils": "basophils", "platelets": "platelets",
}
_PERCENT_FLAGS = ("neutrophils", "bands", "lymphocytes", "monocytes", "eosinophils", "basophils")


class _Version(argparse.Action):
    """`--version`: the installed package's version, looked up only when asked (start-up matters)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        from importlib import metadata

        try:
            version = metadata.version("leukowatch")
        except metadata.PackageNotFoundError:
            version = "unknown (not installed)"
        print(f"leukowatch {version}")
        parser.exit()


class UsageError(Exception):
    """Bad command line (not bad clinical input): argparse style, exit 2."""


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def _port(text: str) -> int:
    """A TCP port for --port/--mllp-port: checked here, so 70000 is a usage error (exit 2), not a
    traceback from bind() or a server announcing a port it cannot have."""
    port = _whole_number(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port (0-65535)")
    return port


def _byte_limit(text: str) -> int:
    """--max-message-bytes: at least 1 (with 0 or less the listener dropped every connection unanswered)."""
    limit = _whole_number(text)
    if limit < 1:
        raise argparse.ArgumentTypeError(f"{limit} bytes: a message limit must be at least 1")
    return limit


def _read_text(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8-sig") as fh:
            return fh.read()
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except IsADirectoryError:
        raise InputError(path, "is a directory, not a message file (an OMOP folder needs --format omop)") from None
    except UnicodeDecodeError as exc:
        raise InputError(path, f"not UTF-8 text ({exc.reason})") from None


def request_from_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The JSON request the `assess` flags describe (the same shape a file would hold)."""
    observations: list[dict[str, Any]] = []
    for flag, analyte in _COUNT_FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            observations.append({"analyte": analyte, "value": value, "unit": args.unit})
    for analyte in _PERCENT_FLAGS:
        value = getattr(args, f"{analyte}_pct", None)
        if value is not None:
            observations.append({"analyte": analyte, "value": value, "unit": "%"})
    if args.hemoglobin is not None:
        observations.append({"analyte": "hemoglobin", "value": args.hemoglobin, "unit": args.hb_unit})
    if not observations:
        raise InputError("observations", "give a FILE (or - for stdin) or at least one count flag such as --wbc")
    request: dict[str, Any] = {
        "patient": {"sex": args.sex or "unknown", "duffy_null": args.duffy_null},
        "observations": observations,
        "medications": args.med or [],
        "conditions": args.condition or [],
        "symptoms": args.symptom or [],
    }
    if args.age is not None:
        request["patient"]["age_years"] = args.age
    if args.temp is not None:
        request["temperature_c"] = args.temp
    if args.temp_f is not None:
        request["temperature_f"] = args.temp_f
    if args.chemo or args.chemo_last_dose:
        request["chemotherapy"] = {"active": True, "last_dose": args.chemo_last_dose, "regimen": args.regimen}
    if args.recurrent_infections:
        request["recurrent_infections"] = True
    return request


#: Files read as text without consulting the lab readers (keeps `assess FILE.json` start-up light).
_TEXT_SUFFIXES = (".json", ".hl7", ".er7", ".msg", ".txt")


def load_request_file(file: str, fmt: str, patient: str | None = None) -> dict[str, Any]:
    """A request dict from FILE (- for stdin). CSV, Parquet and OMOP (a folder or DuckDB file) go
    through the lab readers by path; the JSON request, FHIR and HL7 through `load_request_text`."""
    text_input = fmt in ("json", "fhir", "hl7") or (fmt == "auto" and file.lower().endswith(_TEXT_SUFFIXES))
    if file != "-" and not text_input:
        from .io import TABLE_FORMATS, path_format, request_from_path  # light: no duckdb/pyarrow here

        if path_format(file, fmt) in TABLE_FORMATS:
            return request_from_path(file, fmt, patient)
    return load_request_text(_read_text(file), fmt, file, patient)


def load_request_text(text: str, fmt: str, source: str, patient: str | None = None) -> dict[str, Any]:
    """A request dict from a file's text: the project JSON, FHIR JSON or an HL7 v2 message."""
    stripped = text.lstrip("\ufeff\x0b \r\n\t")
    if fmt == "auto":
        if stripped.startswith("MSH") or stripped.startswith("\x0bMSH"):
            fmt = "hl7"
        elif stripped.startswith("{") or stripped.startswith("["):
            fmt = "json"
        else:
            raise InputError(source, "unrecognised input: expected a JSON request, FHIR JSON or an HL7 v2 message "
                                     "(CSV, Parquet and OMOP are read from a file, not stdin)")
    if fmt == "json":
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise InputError(source, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
        if isinstance(data, dict) and "resourceType" in data and "observations" not in data:
            fmt = "fhir"
        else:
            if patient is not None:
                raise InputError("--patient", "picks one person of a lab file; a JSON request is one person already")
            return data
    if fmt in ("fhir", "hl7"):
        from .io import request_from_text  # imported only for these formats

        return request_from_text(stripped, fmt, source, patient)
    raise InputError("--format", f"unknown format {fmt!r}")


def cmd_assess(args: argparse.Namespace) -> int:
    from .assess import assess

    if args.file is not None:
        request = load_request_file(args.file, args.format, args.patient)
    else:
        request = request_from_flags(args)
    if isinstance(request, dict):
        if args.profile:
            request["profile"] = args.profile
        if args.criteria:
            request["criteria"] = args.criteria
    assessment = assess(request)
    if args.fhir:
        from .render.fhir import bundle_json

        print(bundle_json(assessment, request))
    elif args.json:
        from .render.json import dumps

        print(dumps(assessment))
    else:
        from rich.console import Console

        from .render.text import print_assessment

        print_assessment(assessment, Console(no_color=args.no_color, highlight=False))
    return EXIT_OK


def cmd_knowledge(args: argparse.Namespace) -> int:
    from .knowledge import active, knowledge_version, load_table, summary

    if args.diff:
        return _print_diff(args.json)
    if args.section == "alerts":  # the escalation table (knowledge/alerts.toml)
        from .rules.alerts import alert_rows

        if args.json:
            print(json.dumps(alert_rows(), indent=2, ensure_ascii=False))
        else:
            from .render.text import print_alert_table

            print_alert_table(alert_rows(), knowledge_version())
        return EXIT_OK

    profiles = load_table("profiles")["profiles"]
    criteria = load_table("criteria")["versions"]
    drugs = load_table("drugs")
    conditions = load_table("conditions")["conditions"]
    if args.json:
        print(json.dumps(summary(), indent=2, ensure_ascii=False))
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    overlay = active().overlay
    console.print(f"[bold]leukowatch knowledge[/] {knowledge_version()}"
                  + (f" (site overlay {overlay}: `leukowatch knowledge --diff`)" if overlay else ""))
    t = Table(title="Profiles", title_justify="left")
    t.add_column("name")
    t.add_column("description", overflow="fold")
    for name, spec in profiles.items():
        t.add_row(name, spec["description"])
    console.print(t)
    t = Table(title="Criteria", title_justify="left")
    t.add_column("name")
    t.add_column("source", overflow="fold")
    for name, spec in criteria.items():
        t.add_row(f"{name} ({spec['label']})", spec["source"])
    console.print(t)
    if args.section in (None, "drugs"):
        t = Table(title="Medicines linked to low white cells", title_justify="left")
        for col in ("generic", "brands", "classes", "risk", "source"):
            t.add_column(col, overflow="fold")
        for d in drugs["drugs"]:
            t.add_row(d["generic"], ", ".join(d.get("brands", [])), ", ".join(d["classes"]), d.get("risk", ""),
                      d["source"])
        console.print(t)
    if args.section in (None, "conditions"):
        t = Table(title="Conditions linked to leukopenia", title_justify="left")
        for col in ("condition", "synonyms", "category", "course", "source"):
            t.add_column(col, overflow="fold")
        for c in conditions:
            t.add_row(c["name"], ", ".join(c.get("synonyms", [])), c["category"], c["course"], c["source"])
        console.print(t)
    return EXIT_OK


def _add_assess(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("assess", help="assess one blood count (JSON request, FHIR, HL7 v2, CSV/Parquet, OMOP, or flags)",
                       description="Assess one person's blood count. Give a FILE (- for stdin) or count flags.")
    p.add_argument("file", nargs="?", help="JSON request, FHIR JSON, HL7 v2 message, CSV, Parquet, an OMOP folder "
                                           "or DuckDB file; - reads stdin (JSON, FHIR, HL7)")
    p.add_argument("--format", default="auto", choices=("auto", "json", "fhir", "hl7", "csv", "parquet", "omop",
                                                        "duckdb"), help="input format (default: detected)")
    p.add_argument("--patient", metavar="ID", help="the person to assess when FILE holds several (CSV, OMOP...)")
    p.add_argument("--json", action="store_true", help="print the Assessment as JSON")
    p.add_argument("--fhir", action="store_true", help="print the Assessment as a FHIR R4 Bundle")
    p.add_argument("--profile", help="reference-range profile (standard, article, duffy_null)")
    p.add_argument("--criteria", help="grading criteria (ctcae-v5, ctcae-v6, daids-v2.1; DAIDS bands by age in days "
                                      "from the request's birth_date)")
    p.add_argument("--no-color", action="store_true")
    g = p.add_argument_group("counts (instead of a FILE)")
    g.add_argument("--unit", default="10*9/L", help="unit of the count flags (default 10*9/L; e.g. K/uL, /uL)")
    for flag in _COUNT_FLAGS:
        g.add_argument(f"--{flag}", type=float, metavar="N")
    for analyte in _PERCENT_FLAGS:
        g.add_argument(f"--{analyte}-pct", dest=f"{analyte}_pct", type=float, metavar="PCT",
                       help=f"{analyte} as %% of WBC")  # argparse %-formats help
    g.add_argument("--hemoglobin", "--hb", type=float, metavar="N")
    g.add_argument("--hb-unit", default="g/dL")
    c = p.add_argument_group("person and context")
    c.add_argument("--sex", choices=("male", "female", "unknown"))
    c.add_argument("--age", type=float, metavar="YEARS")
    c.add_argument("--duffy-null", action="store_true", help="Duffy-null (Fy(a-b-)) person: DANC ranges")
    c.add_argument("--med", action="append", metavar="NAME", help="a medicine (repeat)")
    c.add_argument("--condition", action="append", metavar="NAME", help="a diagnosis (repeat)")
    c.add_argument("--symptom", action="append", metavar="TEXT", help="a symptom (repeat)")
    c.add_argument("--temp", type=float, metavar="°C", help="temperature in °C")
    c.add_argument("--temp-f", type=float, metavar="°F", help="temperature in °F (instead of --temp)")
    c.add_argument("--chemo", action="store_true", help="on active chemotherapy")
    c.add_argument("--chemo-last-dose", metavar="DATE")
    c.add_argument("--regimen", help="chemotherapy regimen (for hold thresholds)")
    c.add_argument("--recurrent-infections", action="store_true")
    p.set_defaults(func=cmd_assess)


def _add_knowledge(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("knowledge", help="list profiles, criteria, medicines and conditions with sources")
    p.add_argument("section", nargs="?", choices=("drugs", "conditions", "alerts"))
    p.add_argument("--json", action="store_true")
    p.add_argument("--diff", action="store_true", help="what the site overlay (--knowledge DIR) changes")
    p.set_defaults(func=cmd_knowledge)


def _print_diff(as_json: bool) -> int:
    """Each value the site overlay sets: file, key, bundled value (or "added") and the site's value."""
    from .knowledge import active, thaw

    k = active()
    if as_json:
        print(json.dumps({"knowledge_version": k.version, "overlay": k.overlay,
                          "changes": [thaw(c._asdict()) for c in k.changes]}, indent=2, ensure_ascii=False))
        return EXIT_OK
    print(f"knowledge {k.version}: " + (f"overlay {k.overlay}" if k.overlay else "bundled tables, no site overlay"))
    for c in k.changes:
        old = "(added)" if c.old is None else json.dumps(thaw(c.old), ensure_ascii=False)
        print(f"{os.path.basename(c.file)}  {c.key}: {old} -> {json.dumps(thaw(c.new), ensure_ascii=False)}")
    return EXIT_OK


def _patient_request(args: argparse.Namespace) -> dict[str, Any]:
    """The stored patient's request (all observations as history), with a --profile override."""
    from .io.store import load_patient_request, open_store

    con = open_store(args.db, read_only=True)
    try:
        request = load_patient_request(con, args.patient)
    finally:
        con.close()
    if args.profile:
        request["profile"] = args.profile
    return request


def cmd_history(args: argparse.Namespace) -> int:
    from .history import build_history

    history = build_history(_patient_request(args))
    if args.json:
        print(json.dumps(history.to_dict(), indent=2, ensure_ascii=False))
    else:
        from .render.report import history_text

        print(history_text(history))
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from .assess import assess
    from .history import build_history
    from .render.report import write_report

    request = _patient_request(args)
    out = write_report(build_history(request), assess(request), args.output)
    print(f"wrote {out}")
    return EXIT_OK


def _add_history_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("patient", help="patient id in the store")
    p.add_argument("--db", help="DuckDB store (default: $LEUKOWATCH_DB or the user data directory)")
    p.add_argument("--profile", help="reference-range profile (standard, article, duffy_null)")


def _add_history(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("history", help="a stored patient's timeline: episodes, chronic/acute, cyclic, drug timing",
                       description="Timeline and verdicts for one patient in the store.")
    _add_history_args(p)
    p.add_argument("--json", action="store_true", help="print episodes, chronicity, cyclic, drug timing as JSON")
    p.set_defaults(func=cmd_history)


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="printable report (HTML or PDF) with a plot of the counts over time",
                       description="Write a printable report for one stored patient.")
    _add_history_args(p)
    p.add_argument("-o", "--output", required=True, help="report.html or report.pdf")
    p.set_defaults(func=cmd_report)


def cmd_read(args: argparse.Namespace) -> int:
    from .io.commands import run_read

    return run_read(args)


def cmd_ingest(args: argparse.Namespace) -> int:
    from .io.commands import run_ingest

    return run_ingest(args)


def _add_io_args(p: argparse.ArgumentParser) -> None:
    from_formats = ("auto", "fhir", "hl7", "csv", "parquet", "omop", "duckdb")
    p.add_argument("--format", default="auto", choices=from_formats, help="input format (default: detected)")
    p.add_argument("--column", action="append", metavar="OURS=THEIRS",
                   help="tabular column name, e.g. value=RESULT (repeat); ours: patient_id, time, analyte, loinc, "
                        "value, unit, low, high, sex, birth_date")
    p.add_argument("--aliases", metavar="FILE.toml", help="local lab codes -> analytes for HL7 OBX-3 ([aliases] WBC = \"wbc\")")
    p.add_argument("--table", help="MEASUREMENT table name in a DuckDB database (OMOP)")
    p.add_argument("--rejects", metavar="FILE.csv", help="also write the rejected records with reasons to a CSV")


def _add_read(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("read", help="print the normalised observations and rejects of a lab file",
                       description="Read FHIR, HL7 v2, CSV/Parquet or OMOP and print what leukowatch understood.")
    p.add_argument("file", help="FHIR JSON, HL7 v2, CSV, Parquet, an OMOP folder or DuckDB database")
    _add_io_args(p)
    p.add_argument("--json", action="store_true", help="print observations, patients and rejects as JSON")
    p.add_argument("--all-rejects", action="store_true", help="also list skipped records (not blood counts)")
    p.set_defaults(func=cmd_read)


def _add_ingest(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ingest", help="store lab files in the DuckDB store (idempotent)",
                       description="Store patients, observations (with provenance) and medicines in a DuckDB file.")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--db", help="DuckDB store (default: $LEUKOWATCH_DB or the user data directory)")
    _add_io_args(p)
    p.set_defaults(func=cmd_ingest)


def cmd_serve(args: argparse.Namespace) -> int:
    from .service.serve import run

    return run(db=args.db, host=args.host, port=args.port, insecure_dev=args.insecure_dev,
               public_url=args.public_url, log_level=args.log_level, lab_feed=_feed_options(args, args.mllp_port),
               notify=(args.notify_url, args.notify_fhir), allowed_hosts=tuple(args.allowed_host or ()))


def _feed_options(args: argparse.Namespace, port: int | None) -> Any:
    """The MLLP listener options the flags describe (None when no port was asked for)."""
    if port is None:
        if args.notify_url or args.notify_fhir or args.mllp_tls_cert:
            raise UsageError("--notify-url, --notify-fhir and --mllp-tls-* need --mllp-port")
        return None
    from .service.mllp import FeedOptions
    from .service.notify import ENV_NOTIFY_SECRET

    if bool(args.mllp_tls_cert) != bool(args.mllp_tls_key):
        raise UsageError("--mllp-tls-cert and --mllp-tls-key go together")
    if args.notify_url and not os.environ.get(ENV_NOTIFY_SECRET):
        raise InputError(ENV_NOTIFY_SECRET, "--notify-url signs each notice: set the shared HMAC secret here")
    return FeedOptions(host=args.mllp_host or args.host, port=port, max_message_bytes=args.max_message_bytes,
                       tls_cert=args.mllp_tls_cert, tls_key=args.mllp_tls_key)


def _add_feed_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mllp-tls-cert", metavar="PEM", help="TLS certificate for the MLLP listener (with --mllp-tls-key)")
    p.add_argument("--mllp-tls-key", metavar="PEM", help="TLS private key for the MLLP listener")
    p.add_argument("--max-message-bytes", type=_byte_limit, default=1_000_000, metavar="N",
                   help="largest HL7 message accepted (default 1000000); a larger one is answered AR")
    p.add_argument("--notify-url", metavar="URL", help="webhook for new critical worklist items (HMAC-signed with "
                                                       "$LEUKOWATCH_NOTIFY_SECRET; retried, then dead-lettered)")
    p.add_argument("--notify-fhir", metavar="BASE", help="FHIR server base: POST a Flag and a Communication per new "
                                                         "critical worklist item")


def cmd_listen(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from .service.mllp import run_listener

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    args.mllp_host = args.host
    options = _feed_options(args, args.port)

    def announce(port: int) -> None:
        print(f"leukowatch: lab feed (MLLP) listening on {args.host}:{port}", file=sys.stderr, flush=True)

    asyncio.run(run_listener(args.db, options, (args.notify_url, args.notify_fhir), announce))
    return EXIT_OK


def _add_listen(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("listen", help="real-time lab feed: HL7 v2 ORU^R01 over MLLP, ACKed after storing",
                       description="Listen for HL7 v2 results over MLLP/TCP, store each before its ACK, judge it "
                                   "against the person's history and put new alerts on the worklist.")
    p.add_argument("--db", help="DuckDB store (default: $LEUKOWATCH_DB or the user data directory)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=2575, help="MLLP port (default 2575; 0 picks a free one)")
    _add_feed_args(p)
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    p.set_defaults(func=cmd_listen)


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="web page, REST API and CDS Hooks services (FastAPI + uvicorn)",
                       description="Serve the web page, the REST API (/docs) and the CDS Hooks services.")
    p.add_argument("--db", help="DuckDB store for patient pages (default: $LEUKOWATCH_DB or the user data directory)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8000, help="port (default 8000)")
    p.add_argument("--public-url", help="external base URL clients call (CDS Hooks JWT aud); required beyond "
                                        "loopback; default on loopback: http://HOST:PORT")
    p.add_argument("--allowed-host", action="append", metavar="NAME",
                   help="a Host header name to accept besides the loopback names (repeat); others get 400")
    p.add_argument("--insecure-dev", action="store_true",
                   help="DO NOT verify CDS Hooks JWTs and allow listening beyond loopback without tokens "
                        "(local sandboxes only; prints a loud warning)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    p.add_argument("--mllp-port", type=_port, metavar="N", help="also run the lab feed's MLLP listener on port N "
                                                              "(same process, same store writer)")
    p.add_argument("--mllp-host", help="address of the MLLP listener (default: --host)")
    _add_feed_args(p)
    p.set_defaults(func=cmd_serve)


def cmd_demo(args: argparse.Namespace) -> int:
    if args.demo_command == "load":
        from .demo.commands import load_command

        return load_command(args.dir, args.db)
    from .demo.commands import generate_command

    generate_command(args.persons, args.seed, args.output, args.subset)
    return EXIT_OK


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="synthetic demo population with known truth")
    dsub = p.add_subparsers(dest="demo_command", required=True, parser_class=type(p))
    g = dsub.add_parser("generate", help="generate the demo set (Parquet, OMOP, FHIR, HL7 v2, truth)")
    g.add_argument("--persons", type=int, default=2000, help="number of persons (default 2000)")
    g.add_argument("--seed", type=int, default=7, help="random seed (default 7); same seed, same data")
    g.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory")
    g.add_argument("--subset", type=int, default=50, metavar="N",
                   help="persons also written as FHIR Bundles and HL7 v2 messages (default 50)")
    g.set_defaults(func=cmd_demo)
    ld = dsub.add_parser("load", help="load a generated demo set into the store (results, medicines, chemotherapy)")
    ld.add_argument("dir", metavar="DIR")
    ld.add_argument("--db", help="DuckDB store (default: $LEUKOWATCH_DB or the user data directory)")
    ld.set_defaults(func=cmd_demo)


def cmd_validate(args: argparse.Namespace) -> int:
    from .demo.commands import validate_command

    return validate_command(args.dir, args.engine, args.json, args.mismatches)


def _add_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="screen a demo set and compare the verdicts with its truth")
    p.add_argument("dir", metavar="DIR", help="a directory written by `leukowatch demo generate`")
    p.add_argument("--engine", default="duckdb", choices=("duckdb", "spark", "assess"),
                   help="population engine (duckdb, spark) or the per-patient engine (assess; slow)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--mismatches", type=int, default=20, metavar="N", help="mismatches to list (default 20)")
    p.set_defaults(func=cmd_validate)


def cmd_screen(args: argparse.Namespace) -> int:
    import os

    from .population import print_summary, screen

    result = screen(args.inputs, args.outdir, engine=args.engine, profile=args.profile, criteria=args.criteria,
                    memory_limit=args.memory_limit, spark_master=args.spark_master,
                    progress=not args.quiet and sys.stderr.isatty())
    if args.json:
        print(json.dumps(result.summary, indent=2, default=str))
    else:
        print_summary(result)
        print(f"outputs in {os.fspath(result.outdir)}: " + ", ".join(sorted(p.name for p in result.paths.values())))
    return EXIT_OK


def _add_screen(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("screen", help="screen a population of results on DuckDB (default) or Spark",
                       description="Grade every result, find episodes, chronic and drug-associated cases, and "
                                   "write Parquet outputs, a summary and the rejects to OUTDIR.")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="CSV/Parquet files or folders (tabular mapping; medications.* and temperatures.* beside "
                        "them), OMOP CDM tables (measurement.*, person.*, drug_exposure.*), an OMOP DuckDB file "
                        "or the leukowatch store (.duckdb)")
    p.add_argument("-o", "--outdir", required=True, metavar="OUTDIR")
    p.add_argument("--engine", default="duckdb", choices=("duckdb", "spark"))
    p.add_argument("--spark-master", metavar="URL", help="Spark master (default local[2]), e.g. spark://host:7077")
    p.add_argument("--memory-limit", metavar="SIZE", help="memory for the whole screen, e.g. 2GB (DuckDB: persons are screened in "
                        "buckets that fit, the rest spills to disk)")
    p.add_argument("--profile", help="one reference profile for everybody (default: standard; duffy_null "
                                     "for Duffy-null persons)")
    p.add_argument("--criteria", help="grading criteria (ctcae-v5, ctcae-v6, daids-v2.1)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=cmd_screen)


def cmd_token(args: argparse.Namespace) -> int:
    """`token create|list|revoke`: API tokens in the store (only a hash of each is kept)."""
    from .io.store import open_store
    from .service.auth import create_token, list_tokens, revoke_token

    con = open_store(args.db, read_only=args.token_command == "list")
    try:
        if args.token_command == "create":
            con.execute("BEGIN TRANSACTION")
            token = create_token(con, args.name, args.role)
            con.execute("COMMIT")
            print(f"created token {args.name!r} with role {args.role}; it is shown only now, keep it secret:")
            print(token)
        elif args.token_command == "list":
            for t in list_tokens(con):
                print(f"{t['name']}\t{t['role']}\t{t['state']}\tcreated {t['created_at']}")
        elif not revoke_token(con, args.name):
            raise InputError(args.name, "no active token with this name")
        else:
            print(f"revoked token {args.name!r}")
    finally:
        con.close()
    return EXIT_OK


def _add_token(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("token", help="create, list and revoke API tokens (roles read, ingest, admin)")
    tsub = p.add_subparsers(dest="token_command", required=True, parser_class=type(p))
    c = tsub.add_parser("create", help="create a token; prints it once, as the last line")
    c.add_argument("--role", required=True, choices=("read", "ingest", "admin"))
    c.add_argument("--name", required=True, help="who or what holds it (shown in the audit)")
    ls = tsub.add_parser("list", help="names, roles and states (never the tokens)")
    r = tsub.add_parser("revoke", help="revoke the token with this name")
    r.add_argument("name", metavar="NAME")
    for q in (c, ls, r):
        q.add_argument("--db", help="DuckDB store (default: $LEUKOWATCH_DB or the user data directory)")
        q.set_defaults(func=cmd_token)


def cmd_audit(args: argparse.Namespace) -> int:
    """`audit`: who read or wrote which patient's data, oldest first (never a value)."""
    from .io.store import open_store
    from .service.audit import audit_bundle, query

    con = open_store(args.db, read_only=True)
    try:
        rows = query(con, patient=args.patient, actor=args.actor, since=_when(args.since, "--since"),
                     until=_when(args.until, "--until"), limit=args.limit)
    finally:
        con.close()
    if args.fhir:
        print(json.dumps(audit_bundle(rows), indent=2))
    elif args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print("\t".join(str(r[k] or "-") for k in ("time", "actor", "role", "action", "patient_id", "outcome")))
    return EXIT_OK


def _when(text: str | None, flag: str) -> Any:
    from datetime import UTC, datetime

    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(flag, f"not an ISO date or date-time: {text!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _add_audit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="the access audit: who read or wrote which patient's data")
    p.add_argument("--db", help="DuckDB store (default: $LEUKOWATCH_DB or the user data directory)")
    p.add_argument("--patient", metavar="ID")
    p.add_argument("--actor", metavar="NAME", help="token name or JWT subject")
    p.add_argument("--since", metavar="ISO", help="from this date or date-time (UTC unless given)")
    p.add_argument("--until", metavar="ISO")
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--json", action="store_true")
    p.add_argument("--fhir", action="store_true", help="print a FHIR Bundle of AuditEvent resources")
    p.set_defaults(func=cmd_audit)


#: Sub-command registrars. Each adds its parser; the heavy imports happen inside its handler.
REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_assess, _add_knowledge, _add_read, _add_ingest, _add_history, _add_report, _add_demo, _add_validate,
    _add_serve, _add_listen, _add_screen, _add_token, _add_audit,
]


def _help_width() -> int:
    """The width argparse gives help (`shutil.get_terminal_size` columns - 2), found without
    importing shutil: argparse builds a formatter for every argument it adds, and shutil's import
    (it loads the compression modules) costs more than building the whole parser."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns or _FALLBACK_COLUMNS
        except (AttributeError, ValueError, OSError):
            columns = _FALLBACK_COLUMNS
    return columns - 2


_FALLBACK_COLUMNS = 80  # shutil.get_terminal_size's fallback


class _Formatter(argparse.HelpFormatter):
    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position, _help_width() if width is None else width)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `command`, only that sub-command's arguments are built (start-up matters:
    building every sub-parser costs more than assessing a blood count)."""
    parser = _Parser(prog="leukowatch", description="Sourced verdicts on leukopenia from white-blood-cell counts.")
    parser.add_argument("--version", action=_Version, help="print the installed version and exit")
    parser.add_argument("--knowledge", metavar="DIR", help="a site's overlay of knowledge tables merged on the "
                        "bundled ones (also $LEUKOWATCH_KNOWLEDGE; accepted before or after the command)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    registrars = [r for r in REGISTRARS if r.__name__ == f"_add_{command}"] if command else []
    for register in registrars or REGISTRARS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        argv = _use_knowledge(list(sys.argv[1:] if argv is None else argv))
        args = build_parser(argv[0] if argv and not argv[0].startswith("-") else None).parse_args(argv)
        return int(args.func(args) or EXIT_OK)
    except UsageError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_BAD_INPUT
    except InputError as exc:
        print(f"error: {exc.field}: {exc.problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:
        from .knowledge import KnowledgeError

        if isinstance(exc, KnowledgeError):
            print(f"error: knowledge: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        busy = _store_busy(exc)
        if busy is None:
            raise
        print(f"error: {busy.field}: {busy.problem}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _use_knowledge(argv: list[str]) -> list[str]:
    """Take `--knowledge DIR` from anywhere in the arguments (global option or after a command) and
    judge with that overlay: validated now, so a bad table stops the command before any output, and
    put in $LEUKOWATCH_KNOWLEDGE so processes this one starts judge with the same tables."""
    rest: list[str] = []
    overlay = None
    args = iter(argv)
    for arg in args:
        if arg == "--":
            rest += [arg, *args]
        elif arg == "--knowledge":
            overlay = next(args, None)
            if overlay is None:
                raise UsageError("leukowatch: error: argument --knowledge: expected one argument")
        elif arg.startswith("--knowledge="):
            overlay = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    if overlay is not None:
        from .knowledge import ENV_VAR, load_knowledge, use

        os.environ[ENV_VAR] = os.path.realpath(overlay)
        use(load_knowledge(overlay))
    elif os.environ.get("LEUKOWATCH_KNOWLEDGE"):  # checked now too: a server must not start on a bad table
        from .knowledge import default_knowledge, use

        use(default_knowledge())
    return rest


def _store_busy(exc: BaseException) -> InputError | None:
    """A DuckDB "file is locked by another process" error raised outside `open_store` (the
    population screen opens the store itself), as the one-line StoreBusy; None for anything else."""
    if not type(exc).__module__.lstrip("_").startswith("duckdb"):
        return None
    from .io.store import busy_error

    return busy_error(exc)


if __name__ == "__main__":
    sys.exit(main())
