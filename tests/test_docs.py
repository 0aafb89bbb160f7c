"""README and docs/ point only at what exists: relative links resolve, every repository path
they name (recsys_kdef/..., tests/..., tools/..., configs/..., launch/...) is a file or folder,
every `python -m recsys_kdef.X` module and dotted `recsys_kdef.X` name imports, and every
`recsys-kdef-*` command is a console script. A module moved or renamed without its docs fails
here, naming the page and line."""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]

LINK = re.compile(r"\]\(([^)\s#]+)(#[^)\s]*)?\)")
REPO_PATH = re.compile(
    r"(?<![\w./-])((?:recsys_kdef|tests|tools|configs|launch|docs)/[\w./*<>{}-]*[\w/*>}])"
)
DOTTED = re.compile(r"(?<![\w./-])(recsys_kdef(?:\.\w+)+)")
COMMAND = re.compile(r"(?<![\w-])(recsys-kdef-[a-z-]*[a-z])")
# paths a command writes or a user chooses, not files of the repository
GENERATED = ("data/", "runs/", "raw/")


def mentions(pattern: re.Pattern) -> list[tuple[str, str]]:
    """(page:line, match) for every match of `pattern` in README.md and docs/."""
    found = []
    for page in PAGES:
        for number, line in enumerate(page.read_text().splitlines(), 1):
            for m in pattern.finditer(line):
                found.append((f"{page.relative_to(ROOT)}:{number}", m.group(1)))
    return found


def resolves(dotted: str) -> bool:
    """A module, or an attribute of the longest importable prefix (recsys_kdef.eval.evaluate.evaluate)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_relative_links_resolve():
    broken = []
    for page in PAGES:
        for number, line in enumerate(page.read_text().splitlines(), 1):
            for m in LINK.finditer(line):
                target = m.group(1)
                if "://" in target or target.startswith("mailto:"):
                    continue
                if not (page.parent / target).exists():
                    broken.append(f"{page.relative_to(ROOT)}:{number}: {target}")
    assert not broken, "\n".join(broken)


def test_named_repository_paths_exist():
    missing = [
        f"{where}: {path}"
        for where, path in mentions(REPO_PATH)
        if not path.startswith(GENERATED)
        and not set(path) & set("*<{")  # a pattern: tools/bench_*.py, test_zoo_<arch>.py
        and not (ROOT / path.rstrip("/.")).exists()
    ]
    assert not missing, "\n".join(missing)


def test_named_modules_import():
    missing = [f"{where}: {name}" for where, name in mentions(DOTTED) if not resolves(name)]
    assert not missing, "\n".join(missing)


def test_named_commands_are_console_scripts():
    unknown = [f"{where}: {name}" for where, name in mentions(COMMAND) if name not in SCRIPTS]
    assert not unknown, "\n".join(unknown)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_page_cites_files_outside_the_repository(page):
    text = page.read_text()
    assert "../shared" not in text and "NOTES §" not in text, page
