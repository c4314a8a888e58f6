"""What users read is self-contained and true: no citations of documents they do not have, links
that resolve, and error hints that name flags the command really has.

Users get README.md, docs/, ``--help`` and the docstrings of src/, kernels/, bench/ and scripts/;
none of them may point at design notes outside the repository ("spec §8", ``../shared/...``,
"go-integration.md").  Error hints are checked twice: statically (every ``--flag`` in an error
message of a command module is an option of a command that module serves) and by running the
known hint paths of the commands in-process.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import re
from pathlib import Path

import pytest

from ccarchive.cli.main import COMMANDS, build_parser
from ccarchive.errors import CcArchiveError
from conftest import IMPORT

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "ccarchive"

#: citations of documents that are not in the repository
FORBIDDEN = re.compile(
    r"§|go-integration|go-archive-format|\.\./shared|shared/(?:spec|reference|fixtures|servers)"
    r"|test-servers\.md|style-anchors|peers\.md|\bspec\.md|\bbe:pkg/|\b[Ss]pec \d",
)
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
MD_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def user_facing_files() -> list[Path]:
    files = [ROOT / "README.md"]
    files += sorted(p for p in (ROOT / "docs").rglob("*") if p.is_file() and p.suffix in (".md", ".service"))
    for folder in (SRC, ROOT / "kernels", ROOT / "bench"):
        files += sorted(p for p in folder.rglob("*") if p.suffix in (".py", ".md") and "__pycache__" not in p.parts)
    files += sorted(p for p in (ROOT / "scripts").iterdir() if p.is_file())
    return files


def test_user_facing_text_cites_no_document_outside_the_repository() -> None:
    files = user_facing_files()
    assert len(files) > 50 and ROOT / "docs" / "format.md" in files  # the walk found the tree
    hits = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
            for path in files
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if FORBIDDEN.search(line)]
    assert not hits, "citations of documents users do not have:\n" + "\n".join(hits)


def test_the_forbidden_pattern_catches_the_old_citations() -> None:
    for text in ("the statistics contract of spec §3", "(`../shared/spec/ccarchive.md` §3)",
                 "See ``go-integration.md`` §1", "be:pkg/archive/sqliteBackend.go:48-77", "Spec 8 budgets"):
        assert FORBIDDEN.search(text), text
    for text in ("a source spec", "source_from_spec(spec)", "docs/format.md", "fsspec URL"):
        assert not FORBIDDEN.search(text), text


def test_relative_links_in_the_docs_resolve() -> None:
    checked = 0
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in MD_LINK.findall(path.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("mailto:"):
                continue
            assert (path.parent / target).exists(), f"{path.relative_to(ROOT)}: broken link {target}"
            checked += 1
    assert checked >= 10


# -- error hints -------------------------------------------------------------------------------------

def command_options() -> dict[str, set[str]]:
    """command -> every option string it accepts (its own and the global ones)."""
    parser = build_parser()
    global_opts = {o for a in parser._actions for o in a.option_strings}
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: global_opts | {o for a in p._actions for o in a.option_strings} for name, p in sub.choices.items()}


def error_message_flags(path: Path) -> list[tuple[int, str]]:
    """(line, flag) for every ``--flag`` in a string inside ``raise SomethingError(...)`` / ``.error(...)``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "id", None) or getattr(node.func, "attr", "")
        if not (name.endswith("Error") or name == "error"):
            continue
        for sub in ast.walk(node):
            if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                found += [(node.lineno, flag) for flag in FLAG.findall(sub.value)]
    return found


def test_every_flag_in_an_error_message_exists_on_a_command_of_its_module() -> None:
    options = command_options()
    by_module: dict[str, set[str]] = {}
    for name, (module, _summary) in COMMANDS.items():
        by_module.setdefault(module, set()).update(options[name])
    anywhere = set().union(*options.values())
    bad, seen = [], 0
    for path in sorted(SRC.rglob("*.py")):
        module = path.stem if path.parent.name == "cli" else None
        allowed = by_module.get(module, anywhere) if module else anywhere
        for line, flag in error_message_flags(path):
            seen += 1
            if flag not in allowed:
                bad.append(f"{path.relative_to(ROOT)}:{line}: {flag}")
    assert seen >= 10  # the scan finds the hints that exist
    assert not bad, "error hints name flags the command does not have:\n" + "\n".join(bad)


def _run_error(argv: list[str]) -> str:
    """Run a command in-process (no logging set-up); the one-line message of its error."""
    args = build_parser().parse_args(argv)
    with pytest.raises(CcArchiveError) as e:
        importlib.import_module(f"ccarchive.cli.{args._module}").run(args.command, args)
    return str(e.value)


def test_known_hints_name_only_flags_of_their_command(tmp_path: Path) -> None:
    options = command_options()
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (["ls", str(empty)], "not a job archive"),
        (["show", f"sqlite://{tmp_path / 'missing.db'}", "fritz/1/2"], "no such SQLite archive"),
        (["verify", str(tmp_path / "missing")], "not a job archive"),
        (["import", "--archive", str(tmp_path / "new"), str(IMPORT / "meta-fritzMinimal.input"),
          str(IMPORT / "data-fritzMinimal.json")], "--cluster-config"),
        (["archive", "--id", "1", "--source", "synthetic"], "--job-db"),
        (["status"], "--job-db"),
        (["demo", "--jobs", "0", "--workdir", str(tmp_path / "demo")], "--jobs"),
    ]
    for argv, expected in cases:
        message = _run_error(argv)
        assert expected in message, (argv, message)
        for flag in FLAG.findall(message):
            assert flag in options[argv[0]], f"ccarchive {argv[0]}: hint names {flag}, which it has not: {message}"
