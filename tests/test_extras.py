"""batchnb._extras and the lazy public names: a missing optional library names the extra to install."""

import subprocess
import sys

import pytest

from batchnb import MissingDependency
from batchnb._extras import require


def test_require_names_the_extra():
    with pytest.raises(MissingDependency) as err:
        require("no_such_module_anywhere", "notebook", "summary()")
    assert str(err.value) == "summary() needs no_such_module_anywhere: pip install 'batchnb[notebook]'"
    assert isinstance(err.value, ImportError)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("blocked", "code", "message"),
    [
        (
            "matplotlib",
            "import pandas as pd, batchnb as bn; bn.summary(pd.DataFrame({'status': [200]}))",
            "summary() needs matplotlib: pip install 'batchnb[notebook]'",
        ),
        (
            "ipywidgets",
            "import batchnb as bn; bn.Composer",
            "batchnb.Composer needs ipywidgets: pip install 'batchnb[notebook]'",
        ),
        (
            "uvicorn",
            "import batchnb as bn; bn.LocalServer().start()",
            "LocalServer needs uvicorn: pip install 'batchnb[server]'",
        ),
    ],
)
def test_a_user_without_the_extra_is_told_which_to_install(blocked, code, message):
    # The module is made unimportable in a fresh interpreter, as if it were not installed.
    prelude = f"import sys; sys.modules[{blocked!r}] = None\n"
    r = subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert f"batchnb.MissingDependency: {message}" in r.stderr, r.stderr[-2000:]
