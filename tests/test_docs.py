"""The docs: the README a newcomer reads first, the pages under docs/, and the API reference they hold.

The site itself is built by ``.ci/run`` (``sphinx-build -W``, warnings as errors); these tests check what the build
cannot see: that the reference names every public name, that links work on a code host too, and that the README's
example runs as written.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import re
from pathlib import Path
from types import ModuleType

import pytest

from tests.test_package import _public_modules

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"

#: the two commands that open the project, word for word (README.md and docs/getting-started.md).
COMMANDS = [
    'python3 -m venv .venv && .venv/bin/pip install -q ".[server]" && .venv/bin/batchnb demo',
    'python3 -m venv .venv && .venv/bin/pip install -q -e ".[dev]" && .venv/bin/python -m pytest',
]


def _pages() -> list[Path]:
    """README.md and every Markdown page of the site (the built site and the notebooks' link left out)."""
    pages = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts and "notebooks" not in p.parts)
    return [README, *pages]


# ---------------------------------------------------------------- the API reference


@functools.cache
def _reference_source() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted((DOCS / "api").glob("*.md")))


def _lookup(dotted: str) -> object:
    """The object a dotted name names: its longest importable prefix, then attributes."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:end]))
        except ImportError:
            continue
        for attr in parts[end:]:
            found = getattr(found, attr)
        return found
    raise LookupError(dotted)


@functools.cache
def _documented() -> dict[str, object]:
    """Every name an autodoc directive of the reference documents, with the object it documents."""
    targets = re.findall(
        r"^\.\. auto(?:class|function|exception|data|module)::\s*(\S+)", _reference_source(), re.MULTILINE
    )
    return {target: _lookup(target) for target in targets}


@pytest.mark.parametrize("module", _public_modules())
def test_the_api_reference_documents_every_name_of_every_public_module(module: str) -> None:
    """Each name of a public module's ``__all__`` is documented by a directive of its own, or is named on the
    module's page as the same object documented elsewhere (``batchnb.client.Client`` is ``batchnb.Client``)."""
    try:
        mod: ModuleType = importlib.import_module(module)
    except ImportError as exc:  # an extra that is not installed
        pytest.skip(str(exc))
    documented, source = _documented(), _reference_source()
    assert module in documented, f"docs/api/ has no automodule for {module}"
    missing = []
    for name in mod.__all__:
        dotted, value = f"{module}.{name}", getattr(mod, name)
        if dotted in documented:
            continue
        documented_elsewhere = any(obj is value for obj in documented.values())
        if not (f"`{dotted}`" in source and documented_elsewhere):
            missing.append(name)
    assert not missing, f"{module}: not in the API reference (docs/api/): {missing}"


def test_the_reference_documents_nothing_that_is_gone_or_private() -> None:
    for target in _documented():
        assert not any(part.startswith("_") for part in target.split(".")), f"{target} is private"
        module, _, name = target.rpartition(".")
        if not module:
            continue  # batchnb itself
        with contextlib.suppress(ImportError):
            parent = importlib.import_module(module)
            if not isinstance(_lookup(target), ModuleType) and hasattr(parent, "__all__"):
                assert name in parent.__all__, f"{target} is documented but {module}.__all__ does not list it"


# ---------------------------------------------------------------- links and the README


def _links(page: Path) -> list[str]:
    """The targets of a page's Markdown links, code left out (a fence, an indented block, a code span)."""
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.MULTILINE | re.DOTALL)
    text = re.sub(r"^(?: {4}|\t).*$", "", text, flags=re.MULTILINE)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.findall(r"\]\(([^)\s]+)\)", text)


def _anchors(page: Path) -> set[str]:
    """The anchors a code host (and MyST) gives a Markdown page's headings."""
    anchors = set()
    for heading in re.findall(r"^#{1,6} (.+)$", page.read_text(encoding="utf-8"), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
        anchors.add(slug.replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_points_to_a_file_that_exists(page: Path) -> None:
    broken = []
    for target in _links(page):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"


def test_the_readme_is_at_most_200_lines() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= 200, f"README.md has {lines} lines: move what a newcomer does not need first into docs/"


def test_the_two_commands_are_in_the_readme_and_getting_started_word_for_word() -> None:
    for page in (README, DOCS / "getting-started.md"):
        lines = {line.strip() for line in page.read_text(encoding="utf-8").splitlines()}
        assert all(command in lines for command in COMMANDS), page.name


def _ten_lines(page: Path) -> str:
    text = page.read_text(encoding="utf-8")
    return text.split("## Ten lines", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.slow
def test_the_readmes_ten_lines_run_as_written() -> None:
    example = _ten_lines(README)
    assert _ten_lines(DOCS / "getting-started.md") == example, "getting-started.md shows other ten lines"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(example, "README.md (Ten lines)", "exec"), {})
    rows = printed.getvalue().splitlines()
    assert rows[0].split() == ["site", "city", "status", "ok", "error"], printed.getvalue()
    assert [row.split()[1:5] for row in rows[1:]] == [
        ["lyon", "Lyon", "201", "True"],
        ["nantes", "Nantes", "201", "True"],
    ]


def test_every_notebook_is_on_the_site() -> None:
    listed = (DOCS / "notebooks.md").read_text(encoding="utf-8")
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert f"\nnotebooks/{notebook.stem}\n" in listed, f"{notebook.name} is not in docs/notebooks.md's toctree"
    assert (DOCS / "notebooks").resolve() == (ROOT / "notebooks").resolve()
