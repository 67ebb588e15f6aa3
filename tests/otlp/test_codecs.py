"""Content-Encoding: the Collector's codecs, bounded by the body limit, and multi-member gzip.

In-process against the HTTP app (werkzeug's test client); ``cramjam`` (the ``codecs`` extra)
is installed in the test environment, and its absence is simulated where the answer differs.
"""

from __future__ import annotations

import gzip
import json
import unittest
import zlib
from unittest import mock

import cramjam
from google.rpc import status_pb2

from mocksup.otlp import _codecs
from tests.otlp.support import in_process
from tests.otlp.test_compat import send, spans_of
from tests.otlp.test_http_input import request_bytes

LIMIT = 64 * 1024


def compressors() -> dict[str, bytes]:
    body = request_bytes("packed", 3)
    return {
        "gzip": gzip.compress(body),
        "zlib": zlib.compress(body),
        "deflate": zlib.compress(body),
        "zstd": bytes(cramjam.zstd.compress(body)),
        "snappy": bytes(cramjam.snappy.compress_raw(body)),  # the block format
        "x-snappy-framed": bytes(cramjam.snappy.compress(body)),
        "lz4": bytes(cramjam.lz4.compress(body)),
    }


def bombs() -> dict[str, bytes]:
    zeros = b"\0" * (LIMIT * 16)  # 1 MiB of zeros: 50 KiB with snappy (its best), less else
    return {
        "gzip": gzip.compress(zeros),
        "zlib": zlib.compress(zeros),
        "zstd": bytes(cramjam.zstd.compress(zeros)),
        "snappy": bytes(cramjam.snappy.compress_raw(zeros)),
        "x-snappy-framed": bytes(cramjam.snappy.compress(zeros)),
        "lz4": bytes(cramjam.lz4.compress(zeros)),
    }


class CodecsTest(unittest.TestCase):
    def setUp(self) -> None:
        self.client, self.ingest = in_process(max_body_size=LIMIT)

    def test_every_collector_encoding_is_accepted(self) -> None:
        for encoding, data in compressors().items():
            with self.subTest(encoding):
                self.assertEqual(send(self.client, data, encoding=encoding).status_code, 200)
        # "snappy" also takes the framed format, as the Collector's auto-detection does.
        framed = bytes(cramjam.snappy.compress(request_bytes("packed", 3)))
        self.assertEqual(send(self.client, framed, encoding="snappy").status_code, 200)
        self.assertEqual(len(spans_of(self.client)), 3 * 8)

    def test_bombs_are_refused_at_the_limit(self) -> None:
        for encoding, data in bombs().items():
            with self.subTest(encoding):
                self.assertLess(len(data), LIMIT)
                response = send(self.client, data, encoding=encoding)
                self.assertEqual(response.status_code, 400)
                message = status_pb2.Status.FromString(response.data).message
                self.assertTrue(
                    "too large" in message or "exceeds max request body size" in message, message
                )
        self.assertEqual(spans_of(self.client), [])

    def test_gzip_members_are_all_kept(self) -> None:
        first, second = request_bytes("first", 3), request_bytes("second", 4)
        # Two members concatenated: one serialised request split in two (protobuf
        # concatenation merges the repeated fields), each member compressed on its own.
        body = gzip.compress(first) + gzip.compress(second)
        self.assertEqual(send(self.client, body, encoding="gzip").status_code, 200)
        self.assertEqual([s["name"] for s in spans_of(self.client)], ["first"] * 3 + ["second"] * 4)
        self.assertEqual(self.ingest.store.stats()["dropped"]["traces"], 0)

    def test_data_after_a_gzip_stream_is_refused(self) -> None:
        for label, tail in (("garbage", b"garbage"), ("zero padding", b"\0" * 8)):
            with self.subTest(label):
                body = gzip.compress(request_bytes()) + tail
                response = send(self.client, body, encoding="gzip")
                self.assertEqual(response.status_code, 400)
                self.assertIn("invalid header", status_pb2.Status.FromString(response.data).message)
        self.assertEqual(spans_of(self.client), [])

    def test_truncated_and_corrupt_bodies(self) -> None:
        for encoding, data in compressors().items():
            with self.subTest(encoding):
                broken = data[: len(data) // 2]
                self.assertEqual(send(self.client, broken, encoding=encoding).status_code, 400)

    def test_without_the_codecs_extra(self) -> None:
        with mock.patch.object(_codecs, "_cramjam", None):
            response = send(
                self.client, compressors()["zstd"], encoding="zstd", content_type="application/json"
            )
        self.assertEqual(response.status_code, 400)
        message = json.loads(response.data)["message"]
        self.assertIn("pip install 'mocksup[codecs]'", message)
        # gzip and deflate need nothing.
        with mock.patch.object(_codecs, "_cramjam", None):
            response = send(self.client, compressors()["gzip"], encoding="gzip")
        self.assertEqual(response.status_code, 200)
