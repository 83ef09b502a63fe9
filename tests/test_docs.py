"""The README and the user documentation name only settings, commands and flags that exist.

Read as a user would copy them: every `RAG_*` variable must be a field of `Settings` (or one of
the few variables read elsewhere), and every `rag …` command line in a code block or code span
must name real commands and real options of those commands.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer

from cli.main import app
from rag.settings import Settings
from tests.conftest import REPO

# The documents whose every command and setting is checked (the docs engineer's; other docs/
# pages may describe test-only variables).
DOCUMENTS = ["README.md", "docs/ingestion.md", "docs/api.md", "docs/architecture.md", "docs/retrieval.md", "docs/grounding.md", "docs/benchmarks.md"]
# Read outside Settings: the config file's path, test failpoints, and docker-compose's model folder.
OTHER_VARIABLES = {"RAG_CONFIG", "RAG_FAILPOINT", "RAG_MODELS_DIR"}

_VARIABLE = re.compile(r"\bRAG_[A-Z0-9_]*[A-Z0-9]\b")
_FENCE = re.compile(r"```(?:bash|sh|console)?\n(.*?)```", re.S)
_SPAN = re.compile(r"`(rag [^`]+)`")


def _text(name: str) -> str:
    return (REPO / name).read_text(encoding="utf-8")


def _setting_variables() -> set[str]:
    return {f"RAG_{field.upper()}" for field in Settings.model_fields}


def unknown_variables(text: str) -> set[str]:
    return set(_VARIABLE.findall(text)) - _setting_variables() - OTHER_VARIABLES


def command_lines(text: str) -> list[str]:
    """`rag …` command lines: from fenced shell blocks (after any `VAR=value` prefix) and code spans."""
    lines: list[str] = []
    for block in _FENCE.findall(text):
        for line in block.splitlines():
            line = line.split(" #")[0].strip()
            words = line.split()
            while words and re.fullmatch(r"\[?[A-Z_][A-Z0-9_]*=\S*\]?", words[0]):
                words.pop(0)
            if words and words[0] == "rag":
                lines.append(" ".join(words))
    lines += [span.replace("\\|", "|") for span in _SPAN.findall(text)]
    return lines


def _options(command: Any) -> dict[str, bool]:
    """Each option of `command`, and whether it takes a value."""
    names: dict[str, bool] = {"--help": False}
    for param in command.params:
        takes_value = not (getattr(param, "is_flag", False) or getattr(param, "count", False))
        for opt in getattr(param, "opts", []):
            names[opt] = takes_value
        for opt in getattr(param, "secondary_opts", []):
            names[opt] = False
    return names


def problems(line: str) -> list[str]:
    """What in one `rag …` line names no real command or option."""
    found: list[str] = []
    command: Any = typer.main.get_command(app)
    words = line.split()[1:]
    resolving = True
    skip_value = False
    for raw in words:
        if "…" in raw and resolving:
            return found  # "rag eval … --report": a placeholder for several commands
        word = raw.strip("[]()'\",.")
        if skip_value or not word:
            skip_value = False
            continue
        if word.startswith("-"):
            flag = word.split("=")[0]
            options = _options(command)
            if re.fullmatch(r"--?[a-z][a-z0-9-]*", flag):
                if flag not in options:
                    found.append(f"{line!r}: {flag} is not an option of {command.name!r}")
                skip_value = options.get(flag, False) and "=" not in word
            continue
        if resolving and hasattr(command, "commands"):
            names = word.split("|")
            missing = [n for n in names if n not in command.commands]
            if missing:
                found.append(f"{line!r}: no command {missing} under {command.name!r}")
                return found
            if len(names) > 1:
                return found  # alternatives: their options cannot be told apart
            command = command.commands[names[0]]
            continue
        resolving = False
    return found


@pytest.mark.parametrize("name", DOCUMENTS)
def test_every_setting_named_exists(name: str) -> None:
    assert unknown_variables(_text(name)) == set()


@pytest.mark.parametrize("name", DOCUMENTS)
def test_every_rag_command_line_names_real_commands_and_options(name: str) -> None:
    lines = command_lines(_text(name))
    assert lines or name != "README.md", "the README shows no `rag` command"
    assert [p for line in lines for p in problems(line)] == []


def test_the_checks_catch_a_wrong_name() -> None:
    """The two checks above would fail on a renamed setting, command or flag."""
    assert unknown_variables("set `RAG_READER_MODEL` and `RAG_READER_MODELL`") == {"RAG_READER_MODELL"}
    text = (
        "```bash\nRAG_HOME=/tmp/x rag search q -k 3 --retreiver bm25\nrag serch q\nrag eval ask q\n```\n"
        "`rag eval qa --squad F --limit 3` and `rag serve --workers 4`"
    )
    lines = command_lines(text)
    assert lines == ["rag search q -k 3 --retreiver bm25", "rag serch q", "rag eval ask q", "rag eval qa --squad F --limit 3", "rag serve --workers 4"]
    assert [bool(problems(line)) for line in lines] == [True, True, True, False, True]


def test_every_bench_command_in_the_docs_uses_real_flags() -> None:
    """`python bench/X.py --flag` lines in the docs name flags the script accepts."""
    bad: list[str] = []
    for name in DOCUMENTS:
        for script, rest in re.findall(r"python (bench/[a-z_]+\.py)([^`\n]*)", _text(name)):
            source = Path(REPO / script).read_text(encoding="utf-8")
            for flag in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", rest):
                if f'"{flag}"' not in source:
                    bad.append(f"{name}: {script} {flag}")
    assert bad == []
