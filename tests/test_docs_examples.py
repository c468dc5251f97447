"""Docs that cannot rot: every ```console example in README.md and docs/*.md runs as written.

Each `$ ` line (with its `\\` continuation lines) is run with bash, in order, in a fresh directory per
page that sees the repository's own files (examples/, tests/data/, src/, bench/) as a fresh clone
would, with the installed `leukowatch` on PATH and nothing else: no store, no demo set until the page
makes one. The lines printed under a command are its expected output: each one (spaces collapsed)
must appear in what the command printed; `…` or `...` on a line of its own stands for lines left out,
at the end of a line for the rest of it (a duration that differs per run). A command must exit
0, unless the page shows its exit code (`$ echo $?` on the next line, or `; echo "exit $?"`).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
#: What a page's commands may read from the repository (a fresh clone has these).
LINKED = ("examples", "tests", "src", "bench", "pyproject.toml", "Makefile")
_BLOCK = re.compile(r"^```console\n(.*?)^```", re.S | re.M)
_ELLIPSIS = {"…", "...", "⋮"}


@dataclass
class Command:
    text: str
    line: int
    expected: list[str] = field(default_factory=list)


def commands(page: Path) -> list[Command]:
    """The page's console commands, in order, with the output lines printed under each."""
    text = page.read_text(encoding="utf-8")
    out: list[Command] = []
    for block in _BLOCK.finditer(text):
        first_line = text[: block.start()].count("\n") + 2
        lines = block.group(1).splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            if line.startswith("$ "):
                cmd, start = line[2:], i
                while cmd.endswith("\\") and i + 1 < len(lines):
                    i += 1
                    cmd = cmd[:-1] + " " + lines[i].strip()
                out.append(Command(cmd, first_line + start))
            elif out and line.strip() and line.strip() not in _ELLIPSIS:
                out[-1].expected.append(line)
            i += 1
    return out


def _norm(text: str) -> str:
    """Spaces collapsed; a trailing `…` means the line goes on (times, sizes that vary per run)."""
    return re.sub(r"\s*(?:…|\.\.\.)$", "", re.sub(r"\s+", " ", text).strip())


def _page_ids() -> list[str]:
    return [p.relative_to(REPO).as_posix() for p in PAGES]


def test_every_page_has_examples_or_says_why() -> None:
    """The README and the docs pages of the rooms that run commands carry runnable examples."""
    with_examples = [p.name for p in PAGES if commands(p)]
    assert "README.md" in with_examples
    for name in ("reading-lab-data.md", "history-and-report.md", "demo.md"):
        assert name in with_examples, f"docs/{name} has no ```console example"


@pytest.mark.parametrize("page", PAGES, ids=_page_ids())
def test_console_examples_run_as_written(page: Path, tmp_path: Path) -> None:
    cmds = commands(page)
    if not cmds:
        pytest.skip(f"{page.name} has no console examples")
    for name in LINKED:
        (tmp_path / name).symlink_to(REPO / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEUKOWATCH_")}
    env |= {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", "COLUMNS": "100",
            "TERM": "dumb", "NO_COLOR": "1", "LEUKOWATCH_DB": str(tmp_path / "default.duckdb")}
    previous_rc = 0
    for i, cmd in enumerate(cmds):
        where = f"{page.name}:{cmd.line}: $ {cmd.text}"
        if cmd.text.strip() == "echo $?":
            assert [_norm(x) for x in cmd.expected] == [str(previous_rc)], f"{where}: exit code {previous_rc}"
            continue
        run = subprocess.run(["bash", "-o", "pipefail", "-c", cmd.text], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=600)
        printed = _norm(run.stdout + "\n" + run.stderr)
        shows_rc = "$?" in cmd.text or (i + 1 < len(cmds) and cmds[i + 1].text.strip() == "echo $?")
        if not shows_rc and "| head" not in cmd.text and "| sed" not in cmd.text:
            assert run.returncode == 0, f"{where}\nexit {run.returncode}\n{run.stdout[-1500:]}\n{run.stderr[-1500:]}"
        for line in cmd.expected:
            assert _norm(line) in printed, f"{where}\nexpected: {line!r}\nprinted:\n{(run.stdout + run.stderr)[-3000:]}"
        previous_rc = run.returncode


_LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=_page_ids())
def test_links_stay_inside_the_repository_and_exist(page: Path) -> None:
    """A reader of a fresh clone can follow every relative link; nothing points outside the repository."""
    text = page.read_text(encoding="utf-8")
    assert "../shared" not in text and "shared/samples" not in text
    for target in _LINK.findall(text):
        if target.startswith(("http://", "https://", "mailto:", "#")):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        assert path.is_relative_to(REPO), f"{page.name}: {target} points outside the repository"
        assert path.exists(), f"{page.name}: {target} does not exist"
