"""batchnb._secrets: credentials kept out of reprs, logs, messages and files, judged as a server reads them."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

import batchnb as bn
from batchnb._secrets import mask_path, mask_url

PASSWORD = "S3cretPassw0rd"


@pytest.mark.parametrize(
    ("path", "masked"),
    [
        ('/x?token=Zq"9xK2-secret-tail', "/x?token=***"),
        ('/x?token=Zq"9xK2-secret-tail&page=2#top', "/x?token=***&page=2#top"),
        ("/x?apiKey=a'b<c>d;e&token=t", "/x?apiKey=***&token=***"),
        ("/x?page=2&client_secret=z%22y", "/x?page=2&client_secret=***"),
        ("GET /x?token=abc HTTP/1.1", "GET /x?token=*** HTTP/1.1"),
    ],
)
def test_a_credential_is_masked_to_the_end_of_its_value(path, masked):
    assert mask_path(path) == masked


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (f"http://alice:{PASSWORD}@api.example/x", "http://***@api.example/x"),
        (f"https://alice:p@ss{PASSWORD}@api.example:8443", "https://***@api.example:8443"),  # an '@' in the password
        (f"https://{PASSWORD}@api.example/?token=t", "https://***@api.example/?token=***"),
        (f"could not reach http://a:{PASSWORD}@h:1/x (refused)", "could not reach http://***@h:1/x (refused)"),
    ],
)
def test_a_urls_user_and_password_are_masked(url, masked):
    assert mask_url(url) == masked and mask_path(url) == masked


def test_reprs_and_refusals_never_show_a_urls_password():
    from batchnb.auth import ClientCredentials

    auth = ClientCredentials(f"https://analyst:{PASSWORD}@login.example/token", "analyst", "secret")
    assert PASSWORD not in repr(auth) and "https://***@login.example/token" in repr(auth)
    client = bn.Client(f"http://alice:{PASSWORD}@127.0.0.1:9", token="t")
    assert PASSWORD not in repr(client)
    for wrong in (f"ftp://alice:{PASSWORD}@h", f"alice:{PASSWORD}@h"):
        with pytest.raises(bn.BatchValidationError) as info:
            bn.Client(wrong)
        assert PASSWORD not in str(info.value) and "***@h" in str(info.value)
    with pytest.raises(bn.BatchValidationError) as info:
        ClientCredentials(f"ftp://a:{PASSWORD}@login.example", "analyst", "secret")
    assert PASSWORD not in str(info.value)


def test_a_run_against_a_url_with_a_password_shows_it_nowhere(server, tmp_path, caplog):
    df = pd.DataFrame({"method": ["GET"], "path": ["/api/2.1/scheduling/companies?page=1"]})
    journal = tmp_path / "run.jsonl"
    client = bn.Client(server.url.replace("http://", f"http://alice:{PASSWORD}@"), max_requests=1)
    with caplog.at_level(logging.INFO, logger="httpx"):
        try:
            result = client.submit(df, journal=journal, progress=False)
        except bn.BatchError as exc:  # the server takes no password: a refusal, which must not show it either
            shown = [str(exc), repr(exc), "" if exc.partial is None else exc.partial.to_string()]
        else:
            shown = [result.to_string()]
    assert any("HTTP Request" in r.getMessage() for r in caplog.records)  # httpx logged each request
    shown += [r.getMessage() for r in caplog.records] + [journal.read_text(), repr(client)]
    assert not [text for text in shown if PASSWORD in text]
