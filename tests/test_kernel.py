"""The sync API inside a real Jupyter kernel: it runs in the kernel's loop, and its progress bar is a widget."""

import nbformat
import pytest
from nbclient import NotebookClient

CELLS = [
    "import pandas as pd, batchnb as bn\nserver = bn.LocalServer().start()",
    # More than one batch: the progress bar is on by default.
    "df = pd.DataFrame({'title': [f'K{i}' for i in range(120)]})\n"
    "client = bn.Client(server.url, **server.credentials(), max_requests=10)\n"
    "result = client.submit(df, method='POST', path='/api/2.1/scheduling/companies', body={'name': 'title'})",
    "print(int(result['ok'].sum()), result['batch'].nunique())",
    "server.stop()",
]


@pytest.mark.slow
def test_sync_submit_in_a_kernel_shows_a_widget_progress_bar():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    submit_outputs = nb.cells[1].outputs
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in submit_outputs), submit_outputs
    assert nb.cells[2].outputs[0]["text"].strip() == "120 12"
