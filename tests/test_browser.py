"""The Composer in a real browser: JupyterLab runs notebooks/03-composer.ipynb, a click on Submit in the page.

Needs Debian's chromium at /usr/bin/chromium (``apt-get install -y chromium``) and the
``playwright`` Python package; no browser download. Without them the test is skipped,
unless ``BATCHNB_REQUIRE_BROWSER`` is set (as in CI), where that is a failure. Run it
alone with ``pytest -m browser tests/test_browser.py``. A screenshot of the page lands
in ``tests/artifacts/composer.png``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from tests.support import free_port, wait_for_http

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
HERE = Path(__file__).parent
NOTEBOOK = HERE.parent / "notebooks" / "03-composer.ipynb"
ARTIFACTS = HERE / "artifacts"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TEARDOWN_TAG = "batchnb-teardown"


def _missing(reason: str) -> None:
    # CI sets BATCHNB_REQUIRE_BROWSER: there a missing browser is a failure, not a skip.
    if os.environ.get("BATCHNB_REQUIRE_BROWSER"):
        pytest.fail(f"BATCHNB_REQUIRE_BROWSER is set but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


if not CHROMIUM.exists():
    _missing(f"Debian's chromium is not installed at {CHROMIUM} (apt-get install -y chromium)")
try:
    from playwright import sync_api
except ImportError:
    _missing("the playwright Python package is not installed (pip install playwright)")


def notebook_for_the_page(target: Path) -> None:
    """Copy the notebook without its outputs and without the cell that stops the server.

    In the page, Submit is clicked after every cell ran, so the server must still be up.
    """
    nb = nbformat.read(NOTEBOOK, as_version=4)
    tagged = [i for i, c in enumerate(nb.cells) if TEARDOWN_TAG in c.metadata.get("tags", [])]
    assert tagged == [len(nb.cells) - 1], f"the notebook's last cell should be the one tagged {TEARDOWN_TAG!r}"
    nb.cells = nb.cells[:-1]
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    # Saved widget views would show the results of the run that stored them.
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, target)


@pytest.fixture()
def jupyter_lab(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """JupyterLab on 127.0.0.1 with a token, every config and state folder temporary."""
    root = tmp_path / "root"
    root.mkdir()
    notebook_for_the_page(root / NOTEBOOK.name)
    env = dict(os.environ)
    for var, sub in [
        ("JUPYTER_CONFIG_DIR", "config"),
        ("JUPYTER_RUNTIME_DIR", "runtime"),
        ("JUPYTERLAB_SETTINGS_DIR", "settings"),
        ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"),
    ]:
        (tmp_path / sub).mkdir()
        env[var] = str(tmp_path / sub)
    # The news notification would cover the page; only this setting keeps it away.
    news = tmp_path / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text(json.dumps({"fetchNews": "false"}))
    port, token = free_port(), secrets.token_hex(16)
    log = (tmp_path / "jupyter.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--allow-root",
            "--ServerApp.ip=127.0.0.1",
            f"--port={port}",
            f"--ServerApp.token={token}",
            f"--ServerApp.root_dir={root}",
            "--ServerApp.port_retries=0",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/api/status?token={token}", proc, 60, (tmp_path / "jupyter.log").read_text)
        yield url, token
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


@pytest.mark.slow
def test_submit_clicked_in_the_page_shows_coloured_results(jupyter_lab):
    url, token = jupyter_lab
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2300})
            page.goto(f"{url}/lab/tree/{NOTEBOOK.name}?token={token}")
            idle = page.locator(".jp-StatusBar-Widget", has_text=re.compile(r"Python 3 \(ipykernel\) \| Idle"))
            # Run All before the kernel is connected does nothing: wait for the status bar, not the toolbar.
            idle.first.wait_for(timeout=90_000)

            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
            page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()

            status = page.locator(".batchnb-status")
            sync_api.expect(status).to_contain_text("Submit 1: 4 operations, all ok", timeout=90_000)
            idle.first.wait_for(timeout=60_000)

            page.locator(".batchnb-submit").click()
            results = page.locator(".batchnb-results")
            sync_api.expect(results).to_contain_text("Result of submit 2", timeout=60_000)
            sync_api.expect(status).to_contain_text("Submit 2: 4 operations, all ok")
            text = results.inner_text()
            assert text.count("201") >= 3 and "200" in text
            # Every row's status is drawn as a coloured badge.
            rows = results.locator(".batchnb-result-table")
            assert rows.locator(".batchnb-status-201").count() == 3
            assert rows.locator(".batchnb-status-200").count() == 1
            assert page.locator(".batchnb-errors").inner_text().strip() == ""

            # JupyterLab scrolls inside the notebook panel: bring the form's top to the top of the view.
            page.locator(".batchnb-composer").evaluate("el => el.scrollIntoView({block: 'start'})")
            page.wait_for_timeout(300)
            page.screenshot(path=str(ARTIFACTS / "composer.png"))
        finally:
            browser.close()
    assert (ARTIFACTS / "composer.png").stat().st_size > 10_000
