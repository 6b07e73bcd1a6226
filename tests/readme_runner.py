"""Run the shell blocks of a README against a live ``entitlements demo``, and check their output.

The convention (also written at the top of README.md, in an HTML comment):

- Every fenced block opened with ```` ```bash ```` or ```` ```sh ```` runs, in file order, in
  ``bash`` with ``set -e``; a block whose fence is preceded by the line
  ``<!-- readme-runner: skip (reason) -->`` is skipped.
- Blocks share their variables: the shell's exported state after one block is loaded before
  the next (every assignment is exported: ``set -a``).
- ``127.0.0.1:8000`` (the demo) and ``127.0.0.1:8080`` (the SDK's example player) are replaced
  by the ports the test chose.
- A comment line starting with ``# {`` or ``# [``, continued by lines starting with ``#  ``,
  shows the answer of the command just above it. Every ``"key": value`` shown (a string, a
  number, ``true``/``false``/``null``, or a list of those) must be in that answer, at any
  depth; ``…``/``...`` stand for what is left out, and a string ending in ``…`` matches by
  its start.

Pure helpers (parsing, matching) are separate from running, so they can be tested alone.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SKIP = re.compile(r"^\s*<!--\s*readme-runner:\s*skip\b(?P<reason>.*?)-->\s*$")
FENCE_OPEN = re.compile(r"^(?P<indent>\s*)```(?P<lang>[A-Za-z0-9_-]*)\s*$")
SHOWN_START = re.compile(r"^#\s(?=\s*[\[{])")
SHOWN_MORE = re.compile(r"^#\s{2,}")
HEREDOC = re.compile(r"<<-?\s*(['\"]?)(?P<word>[A-Za-z_][A-Za-z0-9_]*)\1")
MARK = "\x1ereadme-runner:{}\x1e"
MARK_RE = re.compile("\n?\x1ereadme-runner:(\\d+)\x1e\n")
ELLIPSIS = ("…", "...")


@dataclass
class Expectation:
    """One shown answer: the block line it is on, and its text (without the ``#``)."""

    line: int
    text: str


@dataclass
class Block:
    """One fenced shell block of a README."""

    path: Path
    line: int  # 1-based line of the opening fence
    source: str
    skip: str | None = None  # the reason, when marked
    expectations: list[Expectation] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.path.name}:{self.line}"


def shell_blocks(path: Path) -> list[Block]:
    """The ``bash``/``sh`` blocks of a Markdown file, in order, with their skip markers."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opened = FENCE_OPEN.match(lines[i])
        if opened is None:
            i += 1
            continue
        indent = opened.group("indent")
        start = i
        i += 1
        body: list[str] = []
        while i < len(lines) and lines[i].strip() != "```":
            text = lines[i]
            body.append(text[len(indent) :] if text.startswith(indent) else text.lstrip())
            i += 1
        i += 1  # the closing fence
        if opened.group("lang") not in {"bash", "sh", "shell"}:
            continue
        skip = None
        before = start - 1
        while before >= 0 and not lines[before].strip():
            before -= 1
        if before >= 0 and (marker := SKIP.match(lines[before])) is not None:
            skip = marker.group("reason").strip().strip("()").strip() or "marked"
        blocks.append(Block(path, start + 1, "\n".join(body) + "\n", skip))
    return blocks


def instrument(source: str) -> tuple[str, list[Expectation]]:
    """The block with an output marker before each comment line, and its shown answers.

    Marker ``n`` is printed where the ``n``-th comment group starts; the answer shown by an
    expectation is then the output printed between the marker before it and its own marker.
    Lines inside a here-document are left alone.
    """
    out: list[str] = []
    expectations: list[Expectation] = []
    heredoc: str | None = None
    marks = 0
    current: Expectation | None = None
    for number, line in enumerate(source.splitlines(), start=1):
        if heredoc is not None:
            out.append(line)
            if line.strip() == heredoc:
                heredoc = None
            continue
        if current is not None and SHOWN_MORE.match(line):
            current.text += " " + line[1:].strip()
            out.append(line)
            continue
        current = None
        if line.startswith("#"):
            out.append(f"printf '\\n{MARK.format(marks)}\\n'".replace("\x1e", "\\036"))
            marks += 1
            if SHOWN_START.match(line):
                current = Expectation(marks - 1, line[1:].strip())
                expectations.append(current)
        elif (doc := HEREDOC.search(line)) is not None:
            heredoc = doc.group("word")
        out.append(line)
    out.append(f"printf '\\n{MARK.format(marks)}\\n'".replace("\x1e", "\\036"))
    return "\n".join(out) + "\n", expectations


def segments(stdout: str) -> dict[int, str]:
    """The output printed before each marker (since the marker before it)."""
    found: dict[int, str] = {}
    start = 0
    for match in MARK_RE.finditer(stdout):
        found[int(match.group(1))] = stdout[start : match.start()]
        start = match.end()
    return found


def last_json(text: str) -> Any:
    """The last JSON object or array in ``text`` (a command's output), else raise.

    Answers may follow each other on one line (``curl -s`` prints no newline).
    """
    decoder = json.JSONDecoder()
    found: list[Any] = []
    i = 0
    while (match := re.compile(r"[\[{]").search(text, i)) is not None:
        try:
            value, end = decoder.raw_decode(text, match.start())
        except ValueError:
            i = match.start() + 1
            continue
        found.append(value)
        i = end
    if not found:
        raise AssertionError(f"no JSON answer in the output:\n{text[-2000:]}")
    return found[-1]


_SCALAR = r'"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null'
_PAIR = re.compile(
    rf'"(?P<key>(?:[^"\\]|\\.)*)"\s*:\s*(?P<value>{_SCALAR}|\[\s*(?:(?:{_SCALAR})\s*,\s*)*(?:{_SCALAR})?\s*\])'
)


def shown_pairs(text: str) -> list[tuple[str, Any]]:
    """The ``"key": value`` pairs a shown answer promises (placeholders left out)."""
    pairs: list[tuple[str, Any]] = []
    for match in _PAIR.finditer(text):
        value = json.loads(match.group("value"))
        if isinstance(value, str) and value.strip() in ELLIPSIS:
            continue
        if isinstance(value, list) and any(
            isinstance(v, str) and v.strip() in ELLIPSIS for v in value
        ):
            continue
        pairs.append((json.loads(f'"{match.group("key")}"'), value))
    return pairs


def _matches(shown: Any, actual: Any) -> bool:
    if isinstance(shown, str) and isinstance(actual, str):
        for mark in ELLIPSIS:
            if shown.endswith(mark):
                return actual.startswith(shown[: -len(mark)])
    if isinstance(shown, bool) or isinstance(actual, bool):
        return shown is actual
    return bool(shown == actual)


def _values(document: Any, key: str) -> Iterator[Any]:
    if isinstance(document, Mapping):
        for k, v in document.items():
            if k == key:
                yield v
            yield from _values(v, key)
    elif isinstance(document, list):
        for item in document:
            yield from _values(item, key)


def mismatches(shown: str, actual: Any) -> list[str]:
    """What the shown answer promises that the actual one does not hold (empty: all of it)."""
    problems = []
    for key, value in shown_pairs(shown):
        found = list(_values(actual, key))
        if not any(_matches(value, v) for v in found):
            got = ", ".join(json.dumps(v) for v in found) or "no such key"
            problems.append(f'"{key}": {json.dumps(value)} shown, got {got}')
    return problems


@dataclass
class Outcome:
    block: Block
    returncode: int
    stdout: str
    stderr: str
    problems: list[str]


def run_block(
    block: Block,
    *,
    cwd: Path,
    env: Mapping[str, str],
    state: Path,
    substitutions: Mapping[str, str],
    sessions: list[int],
    timeout: float = 120.0,
) -> Outcome:
    """Run one block in bash (``set -e``), sharing exported state through ``state``.

    The block runs in a new session whose id (its bash's PID) is appended to ``sessions``:
    what it left running in the background (the example player) is stopped through it.
    """
    source = block.source
    for old, new in substitutions.items():
        source = source.replace(old, new)
    script, expectations = instrument(source)
    block.expectations = expectations
    wrapped = (
        "set -a\n"
        f"[ -f {_q(state)} ] && . {_q(state)}\n"
        f"trap 'export -p > {_q(state)}' EXIT\n"
        "set -e\n" + script
    )
    # Output goes to files, not pipes: a background job the block starts (the example
    # player) keeps its copy of them open after the block's bash has exited.
    out_path, err_path = state.with_suffix(".out"), state.with_suffix(".err")
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc", "-c", wrapped],
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,  # a background job it starts stays in this process group
        )
    sessions.append(proc.pid)
    try:
        returncode = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        returncode = proc.wait()
    stdout = out_path.read_text(errors="replace")
    stderr = err_path.read_text(errors="replace")
    if returncode < 0:
        stderr += f"\n(the block did not finish within {timeout:.0f} s)"
    done = subprocess.CompletedProcess(proc.args, returncode, stdout, stderr)
    problems: list[str] = []
    outputs = segments(done.stdout)
    for expectation in expectations:
        printed = outputs.get(expectation.line)
        if printed is None:
            problems.append(f"never reached: # {expectation.text}")
            continue
        try:
            answer = last_json(printed)
        except AssertionError as exc:
            problems.append(f"# {expectation.text}: {exc}")
            continue
        problems += [f"# {expectation.text}: {p}" for p in mismatches(expectation.text, answer)]
    return Outcome(block, done.returncode, done.stdout, done.stderr, problems)


def _q(path: Path) -> str:
    return "'" + str(path).replace("'", "'\\''") + "'"


EXPORT = re.compile(r"^export (?P<name>[A-Z][A-Z0-9_]*)=(?P<value>\S+)", re.MULTILINE)


def demo_exports(output: str) -> dict[str, str]:
    """The ``export NAME=value`` lines the demo printed."""
    return {m.group("name"): m.group("value") for m in EXPORT.finditer(output)}


def visible(text: str, limit: int = 4000) -> str:
    """Output for a failure message, without the runner's markers."""
    return MARK_RE.sub("\n", text)[-limit:]


def environment(base: Mapping[str, str], bindir: Path, **extra: str) -> dict[str, str]:
    """The blocks' environment: the test's, minus any configured servers, plus ``extra``."""
    env = {
        k: v
        for k, v in base.items()
        if not k.startswith("ENTITLEMENTS_") and k not in {"PYTEST_CURRENT_TEST", "COLUMNS"}
    }
    env["PATH"] = f"{bindir}{os.pathsep}{base.get('PATH', '/usr/bin:/bin')}"
    env.update(extra)
    return env
