"""Sphinx configuration of the docs site: the guides and the API reference, built with warnings as errors.

    sphinx-build -E -W --keep-going -b html docs docs/_build/html

Why Sphinx (see about.md): the docstrings cross-reference each other with Sphinx roles (``:class:``, ``:func:``),
which Sphinx turns into links and checks; MyST reads the Markdown pages, so that they read the same on a code host;
myst-nb shows the notebooks as they are stored, without running them (nbval runs them in the tests).
"""

from __future__ import annotations

import builtins
import functools
import importlib
from pathlib import Path
from typing import Any

from docutils.nodes import Element
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.domains import Domain
from sphinx.environment import BuildEnvironment
from sphinx.util.docstrings import prepare_docstring
from sphinx.util.nodes import make_refnode

project = "batchnb"
author = "the batchnb authors"
copyright = "the batchnb authors"

extensions = [
    "myst_nb",  # Markdown pages (MyST) and the notebooks
    "sphinx.ext.autodoc",
]

source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
exclude_patterns = ["_build", "**/.ipynb_checkpoints"]

# Headings get anchors a link can name (README.md#dependencies-and-why, server.md#limits), as on a code host.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

# The notebooks are shown as stored: the tests run them (nbval), the docs build does not.
nb_execution_mode = "off"
# 03-composer stores widget views that need a running kernel to draw: its text and HTML outputs stand in.
nb_mime_priority_overrides = [("html", "application/vnd.jupyter.widget-view+json", None)]

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True

# Every cross-reference to a supported batchnb name must resolve: a broken :class: link fails the build. Names of
# other projects (pandas, httpx, the standard library) stay text: the build reads no other site's inventory
# (see the end of this file).
nitpicky = True

html_theme = "furo"
html_title = "batchnb"


# ---------------------------------------------------------------- cross-references by the object they name
#
# A docstring may name an object where it is defined (:class:`batchnb.model.Operation`) or by a re-export; the
# reference links to wherever that very object is documented (batchnb.Operation). A reference to a private name
# (batchnb._connect.Unreached, a TypeVar) or to another project's (pandas.DataFrame) stays text: neither has a page
# here. A reference to a batchnb name that does not exist, or to a public one left undocumented, fails the build.

_NOTHING = object()
#: kinds of documented objects found by identity (data are left out: two constants may be the same small int).
_KINDS = {"class", "exception", "function", "method", "property", "module", "classmethod", "staticmethod"}


def _lookup(dotted: str) -> Any:
    """The object a dotted name names, found by importing its longest importable prefix; _NOTHING when none."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:end]))
        except ImportError:
            continue
        for attr in parts[end:]:
            found = getattr(found, attr, _NOTHING)
            if found is _NOTHING:
                break
        return found
    return _NOTHING


def _candidates(node: Element) -> list[str]:
    """The dotted names a reference may mean, tried in the order Python's domain tries them."""
    target, module, cls = node["reftarget"].lstrip("."), node.get("py:module"), node.get("py:class")
    names = [f"{module}.{cls}.{target}"] if module and cls else []
    if module:
        names.append(f"{module}.{target}")
    return [*names, target]


def _is_private(dotted: str) -> bool:
    """Whether a batchnb name is outside the supported surface: a part starts with ``_``, or its module's
    ``__all__`` does not list it."""
    parts = dotted.split(".")
    if any(part.startswith("_") for part in parts):
        return True
    for end in range(len(parts) - 1, 0, -1):
        try:
            module = importlib.import_module(".".join(parts[:end]))
        except ImportError:
            continue
        return parts[end] not in getattr(module, "__all__", ())
    return False


def _documented(env: BuildEnvironment) -> dict[int, tuple[str, str, str]]:
    """id(object) -> (docname, anchor, name) for every object the reference documents."""
    found: dict[int, tuple[str, str, str]] = {}
    for name, entry in env.domains.python_domain.objects.items():
        obj = _lookup(name) if entry.objtype in _KINDS else _NOTHING
        if obj is not _NOTHING and not entry.aliased:
            found.setdefault(id(obj), (entry.docname, entry.node_id, name))
    return found


def _resolve_by_object(
    documented: dict[int, tuple[str, str, str]], app: Sphinx, env: BuildEnvironment, node: Element, contnode: Element
) -> Element | None:
    if node.get("refdomain") != "py":
        return None
    for name in _candidates(node):
        if not name.startswith("batchnb"):
            continue
        obj = _lookup(name)
        where = documented.get(id(obj)) if obj is not _NOTHING else None
        if where is not None:
            docname, anchor, title = where
            return make_refnode(app.builder, node["refdoc"], docname, anchor, contnode, title)
    return None


def _outside_the_surface(app: Sphinx, domain: Domain, node: Element) -> bool:
    """True (no warning) for a reference to a private batchnb name or to another project's name."""
    if domain.name != "py":
        return False
    for name in _candidates(node):
        if name.startswith("batchnb") and _lookup(name) is not _NOTHING:
            return _is_private(name)
    if "refexplicit" not in node:
        # A name in a signature's annotation, which autodoc could not evaluate: one imported for type checkers
        # only (pd.DataFrame, Path), or another project's.
        return not node["reftarget"].startswith("batchnb.")
    head = node["reftarget"].lstrip(".").split(".")[0]
    return head != "batchnb" and (hasattr(builtins, head) or _lookup(head) is not _NOTHING)


# ---------------------------------------------------------------- constants


def _no_docstring_of_the_type(
    app: Sphinx, what: str, name: str, obj: object, options: object, lines: list[str]
) -> None:
    """A constant without a ``#:`` comment shows its value, not the docstring of ``int`` or ``str``."""
    of_the_type = prepare_docstring(type(obj).__doc__ or "")
    if what in {"data", "attribute"} and of_the_type and [x for x in lines if x] == [x for x in of_the_type if x]:
        lines.clear()


# ---------------------------------------------------------------- links to files outside docs/
#
# The pages link to files outside docs/ as a code host shows them: ../CHANGELOG.md, ../README.md#a-heading,
# ../notebooks/01-quickstart.ipynb. On the site, each is the page that shows that file: the notebooks through the
# link docs/notebooks, the README as the home page (index.md includes it), the changelog in changelog.md.

#: a file outside docs/ (without its suffix, from the repository's root) -> the page of the site that shows it.
_OUTSIDE = {"README": "index", "CHANGELOG": "changelog"}


def _link_outside(app: Sphinx, doctree: Element) -> None:
    root = Path(app.srcdir).parent
    for node in doctree.findall(addnodes.pending_xref):
        if node.get("reftype") != "myst" or node.get("refdomain") != "doc":
            continue
        target = Path(node["reftarget"])
        if not target.is_absolute() or not target.is_relative_to(root):
            continue  # a page of the site already
        name = target.relative_to(root).as_posix()
        node["reftarget"] = name if name in app.env.found_docs else _OUTSIDE.get(name, node["reftarget"])


def setup(app: Sphinx) -> None:
    documented: dict[int, tuple[str, str, str]] = {}

    def index(app: Sphinx, env: BuildEnvironment) -> list[str]:
        # Once every page is read, before any reference is resolved.
        documented.clear()
        documented.update(_documented(env))
        return []

    app.connect("autodoc-process-docstring", _no_docstring_of_the_type)
    app.connect("doctree-read", _link_outside)
    app.connect("env-updated", index)
    app.connect("missing-reference", functools.partial(_resolve_by_object, documented))
    app.connect("warn-missing-reference", _outside_the_surface)
