"""BodyReader: an API's answer decoded as it comes, whole or refused, never passed off as something shorter.

Every dispatcher reads answers with it (the gateway's connections, httpx in
direct mode, the in-process API), and the client reads batch answers with it.
"""

from __future__ import annotations

import gzip
import random
import zlib

import pytest

from batchnb._dispatch import BodyReader, ResponseTooLarge, UnreadableResponse

BODY = b'{"items": [' + b", ".join(b'{"id": %d}' % i for i in range(300)) + b"]}"


def read(encoding: str | None, data: bytes, *, limit: int = 1 << 20, chunk: int = 1000) -> bytes:
    reader = BodyReader(encoding, limit)
    for i in range(0, len(data), chunk):
        reader.feed(data[i : i + chunk])
    return reader.finish()


def raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


@pytest.mark.parametrize("chunk", [1, 7, 100_000])
@pytest.mark.parametrize(
    ("encoding", "encoded"),
    [
        (None, BODY),
        ("identity", BODY),
        ("gzip", gzip.compress(BODY)),
        ("x-gzip", gzip.compress(BODY)),
        ("deflate", zlib.compress(BODY)),
        ("deflate", raw_deflate(BODY)),  # as some servers send it
        ("gzip, gzip", gzip.compress(gzip.compress(BODY))),
        ("deflate, gzip", gzip.compress(zlib.compress(BODY))),
        # RFC 1952: a gzip body may be several members, one after another; each is part of the answer.
        ("gzip", gzip.compress(BODY[:1000]) + gzip.compress(BODY[1000:2000]) + gzip.compress(BODY[2000:])),
    ],
)
def test_a_whole_answer_is_decoded_whatever_the_chunks(encoding: str | None, encoded: bytes, chunk: int) -> None:
    assert read(encoding, encoded, chunk=chunk) == BODY


@pytest.mark.parametrize(
    ("encoding", "encoded", "why"),
    [
        ("gzip", gzip.compress(BODY)[:-5], "ends before its gzip stream does"),  # its trailer missing
        ("gzip", gzip.compress(BODY)[: len(gzip.compress(BODY)) // 2], "ends before its gzip stream does"),
        ("gzip", gzip.compress(BODY)[:4], "ends before its gzip stream does"),  # a header, no more
        ("gzip", gzip.compress(BODY) + gzip.compress(BODY)[:20], "ends before its gzip stream does"),
        ("deflate", zlib.compress(BODY)[:-10], "ends before its deflate stream does"),
        ("gzip, gzip", gzip.compress(gzip.compress(BODY)[:-8]), "ends before its gzip stream does"),
        ("gzip", gzip.compress(BODY) + b"trailing bytes", "its data is corrupt"),
        ("deflate", zlib.compress(BODY) + b"trailing bytes", "goes on after its deflate stream ends"),
        ("gzip", b"not gzip at all", "its data is corrupt"),
    ],
)
def test_an_answer_cut_short_or_with_bytes_past_its_end_is_refused(encoding: str, encoded: bytes, why: str) -> None:
    # Decoding what came would give the first part of a body (or drop its last part) as if it were all of it.
    for chunk in (3, 100_000):
        with pytest.raises(UnreadableResponse, match=why):
            read(encoding, encoded, chunk=chunk)


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "gzip, gzip"])
def test_an_empty_body_is_empty_whatever_its_encoding_says(encoding: str) -> None:
    # A 204, or an answer to HEAD, sent with the Content-Encoding the resource would have.
    assert read(encoding, b"") == b""


def test_the_limit_counts_every_member_of_a_gzip_body() -> None:
    members = gzip.compress(b"x" * 600) + gzip.compress(b"y" * 600)
    assert read("gzip", members, limit=1200) == b"x" * 600 + b"y" * 600
    with pytest.raises(ResponseTooLarge):
        read("gzip", members, limit=1199)
    many = gzip.compress(b"z" * 10) * 10_000  # 200 KB of members that decode to 100 KB
    with pytest.raises(ResponseTooLarge):
        read("gzip", many, limit=50_000, chunk=65_536)


def test_encoded_bytes_that_decode_to_nothing_are_bounded_too() -> None:
    # Empty gzip members decode to no byte at all: without a bound on what comes encoded, an API could
    # send them until the operation's timeout, each 64 KB costing the decoders a few milliseconds.
    empty_members = gzip.compress(b"") * 10_000  # 200 KB that decode to nothing
    with pytest.raises(UnreadableResponse, match="more than 2 times 1000 bytes before it is decoded"):
        read("gzip", empty_members, limit=1000, chunk=65_536)
    assert read("gzip", gzip.compress(b"") * 100, limit=1000) == b""  # 2 KB: within the bound
    noise = random.Random(0).randbytes(1_000_000)  # does not compress: a little larger gzipped
    assert read("gzip", gzip.compress(noise), limit=len(noise)) == noise
