"""What is running: ccarchive's version, the git commit of a checkout, Python and numba.

Shared by ``ccarchive --version`` and the ``ccarchive_build_info`` metric, so a bug report and a
dashboard name the same build.  Nothing here imports numba (its version comes from the package
metadata) or runs git (the commit is read from the checkout's ``.git``), so it costs milliseconds.
"""

from __future__ import annotations

import platform
import re
from functools import lru_cache
from importlib import metadata
from pathlib import Path

_SHA = re.compile(r"[0-9a-f]{40}")


@lru_cache(maxsize=1)
def build_info() -> dict[str, str]:
    """``version``, ``python``, ``numba`` and, when ccarchive runs from a git checkout (an editable
    install), ``commit``; a version that cannot be found is ``"unknown"``."""
    from . import __version__

    info = {"version": __version__, "python": platform.python_version(), "numba": _dist_version("numba")}
    commit = git_commit(Path(__file__).resolve().parents[2])
    if commit:
        info["commit"] = commit
    return info


def version_text() -> str:
    """The ``--version`` text: ``ccarchive 0.1.0 (commit 1d95dea12345)`` then the runtime."""
    info = build_info()
    commit = f" (commit {info['commit'][:12]})" if "commit" in info else ""
    return f"ccarchive {info['version']}{commit}\nPython {info['python']}, numba {info['numba']}"


def _dist_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def git_commit(root: Path) -> str | None:
    """The commit checked out at ``root`` (which holds ``.git``), or None: not a checkout, or a
    ref that cannot be resolved without git itself."""
    git = root / ".git"
    try:
        if git.is_file():  # a worktree or submodule: "gitdir: <path>"
            text = git.read_text().strip()
            if not text.startswith("gitdir:"):
                return None
            git = (root / text.split(":", 1)[1].strip()).resolve()
        head = (git / "HEAD").read_text().strip()
        if _SHA.fullmatch(head):  # detached HEAD
            return head
        if not head.startswith("ref:"):
            return None
        ref = head.split(":", 1)[1].strip()
        common = git
        if (git / "commondir").is_file():  # a linked worktree keeps its refs in the main .git
            common = (git / (git / "commondir").read_text().strip()).resolve()
        for base in (git, common):
            if (base / ref).is_file():
                sha = (base / ref).read_text().strip()
                return sha if _SHA.fullmatch(sha) else None
        packed = common / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                sha, _, name = line.partition(" ")
                if name == ref and _SHA.fullmatch(sha):
                    return sha
    except OSError:
        return None
    return None
