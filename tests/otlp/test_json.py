"""The OTLP/JSON decoder, in-process: the OTLP rules, not the generic proto3 JSON ones."""

from __future__ import annotations

import base64
import math
import unittest
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2 as m
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1 import trace_pb2 as t

from mocksup.otlp._json import OTLPJSONError, parse_request

# opentelemetry-proto examples/trace.json
EXAMPLE_TRACE = {
    "resourceSpans": [
        {
            "resource": {
                "attributes": [{"key": "service.name", "value": {"stringValue": "my.service"}}]
            },
            "scopeSpans": [
                {
                    "scope": {
                        "name": "my.library",
                        "version": "1.0.0",
                        "attributes": [
                            {
                                "key": "my.scope.attribute",
                                "value": {"stringValue": "some scope attribute"},
                            }
                        ],
                    },
                    "spans": [
                        {
                            "traceId": "5B8EFFF798038103D269B633813FC60C",
                            "spanId": "EEE19B7EC3C1B174",
                            "parentSpanId": "EEE19B7EC3C1B173",
                            "name": "I'm a server span",
                            "startTimeUnixNano": "1544712660000000000",
                            "endTimeUnixNano": "1544712661000000000",
                            "kind": 2,
                            "attributes": [
                                {"key": "my.span.attr", "value": {"stringValue": "some value"}}
                            ],
                        }
                    ],
                }
            ],
        }
    ]
}

ID16 = bytes(range(1, 17))
ID8 = bytes(range(1, 9))


def kv(key: str, **value: Any) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(**value))


ATTRS = [
    kv("s", string_value="x"),
    kv("b", bool_value=True),
    kv("i", int_value=-(2**62)),
    kv("d", double_value=1.5),
    kv("bytes", bytes_value=b"\x00\xff"),
    kv("arr", array_value=ArrayValue(values=[AnyValue(int_value=1), AnyValue(string_value="y")])),
    kv("map", kvlist_value=KeyValueList(values=[kv("inner", double_value=2.0)])),
    KeyValue(key="empty"),
]
SCOPE = InstrumentationScope(name="lib", version="2", attributes=ATTRS[:1])
RESOURCE = Resource(attributes=ATTRS, dropped_attributes_count=1)

TRACES = ExportTraceServiceRequest(
    resource_spans=[
        t.ResourceSpans(
            resource=RESOURCE,
            schema_url="https://schema",
            scope_spans=[
                t.ScopeSpans(
                    scope=SCOPE,
                    spans=[
                        t.Span(
                            trace_id=ID16,
                            span_id=ID8,
                            parent_span_id=ID8,
                            trace_state="a=b",
                            flags=257,
                            name="op",
                            kind=t.Span.SPAN_KIND_CLIENT,
                            start_time_unix_nano=2**63 + 5,
                            end_time_unix_nano=2**63 + 9,
                            attributes=ATTRS,
                            dropped_attributes_count=2,
                            events=[t.Span.Event(time_unix_nano=7, name="e", attributes=ATTRS)],
                            links=[t.Span.Link(trace_id=ID16, span_id=ID8, flags=1)],
                            status=t.Status(code=t.Status.STATUS_CODE_ERROR, message="m"),
                        ),
                        t.Span(name="no ids"),
                    ],
                )
            ],
        )
    ]
)

EXEMPLAR = m.Exemplar(trace_id=ID16, span_id=ID8, as_double=0.5, time_unix_nano=3)
METRICS = ExportMetricsServiceRequest(
    resource_metrics=[
        m.ResourceMetrics(
            resource=RESOURCE,
            scope_metrics=[
                m.ScopeMetrics(
                    scope=SCOPE,
                    metrics=[
                        m.Metric(
                            name="g",
                            gauge=m.Gauge(
                                data_points=[
                                    m.NumberDataPoint(as_double=math.inf, exemplars=[EXEMPLAR])
                                ]
                            ),
                        ),
                        m.Metric(
                            name="s",
                            unit="1",
                            sum=m.Sum(
                                data_points=[m.NumberDataPoint(as_int=-3, attributes=ATTRS)],
                                aggregation_temporality=2,
                                is_monotonic=True,
                            ),
                        ),
                        m.Metric(
                            name="h",
                            histogram=m.Histogram(
                                data_points=[
                                    m.HistogramDataPoint(
                                        count=3,
                                        sum=1.5,
                                        bucket_counts=[1, 2],
                                        explicit_bounds=[0.5],
                                        min=0.1,
                                        max=1.0,
                                    )
                                ],
                                aggregation_temporality=1,
                            ),
                        ),
                        m.Metric(
                            name="e",
                            exponential_histogram=m.ExponentialHistogram(
                                data_points=[
                                    m.ExponentialHistogramDataPoint(
                                        count=2,
                                        scale=-1,
                                        zero_count=1,
                                        positive=m.ExponentialHistogramDataPoint.Buckets(
                                            offset=-2, bucket_counts=[1]
                                        ),
                                    )
                                ]
                            ),
                        ),
                        m.Metric(
                            name="q",
                            summary=m.Summary(
                                data_points=[
                                    m.SummaryDataPoint(
                                        count=1,
                                        sum=2.0,
                                        quantile_values=[
                                            m.SummaryDataPoint.ValueAtQuantile(
                                                quantile=0.5, value=2
                                            )
                                        ],
                                    )
                                ]
                            ),
                            metadata=ATTRS[:2],
                        ),
                    ],
                )
            ],
        )
    ]
)

LOGS = ExportLogsServiceRequest(
    resource_logs=[
        logs_pb2.ResourceLogs(
            resource=RESOURCE,
            scope_logs=[
                logs_pb2.ScopeLogs(
                    scope=SCOPE,
                    log_records=[
                        logs_pb2.LogRecord(
                            time_unix_nano=1,
                            observed_time_unix_nano=2,
                            severity_number=logs_pb2.SEVERITY_NUMBER_WARN,
                            severity_text="W",
                            body=AnyValue(kvlist_value=KeyValueList(values=ATTRS)),
                            attributes=ATTRS,
                            flags=1,
                            trace_id=ID16,
                            span_id=ID8,
                            event_name="ev",
                        )
                    ],
                )
            ],
        )
    ]
)


def otlp_json(message: Message, *, upper: bool = False) -> Any:
    """OTLP/JSON of ``message``: proto3 JSON with ids turned from base64 into hex."""
    doc = json_format.MessageToDict(message)

    def fix(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if key in ("traceId", "spanId", "parentSpanId"):
                    text = base64.b64decode(value).hex()
                    out[key] = text.upper() if upper else text
                else:
                    out[key] = fix(value)
            return out
        if isinstance(node, list):
            return [fix(v) for v in node]
        return node

    return fix(doc)


def snake(node: Any) -> Any:
    """The same document with snake_case keys."""
    import re

    if isinstance(node, dict):
        return {re.sub(r"([A-Z])", r"_\1", k).lower(): snake(v) for k, v in node.items()}
    if isinstance(node, list):
        return [snake(v) for v in node]
    return node


class OTLPJSONTest(unittest.TestCase):
    def test_round_trip_of_every_field(self) -> None:
        for signal, message in (("traces", TRACES), ("metrics", METRICS), ("logs", LOGS)):
            with self.subTest(signal=signal):
                self.assertEqual(parse_request(signal, otlp_json(message)), message)
                self.assertEqual(parse_request(signal, otlp_json(message, upper=True)), message)
                self.assertEqual(parse_request(signal, snake(otlp_json(message))), message)

    def test_example_from_the_specification(self) -> None:
        request = parse_request("traces", EXAMPLE_TRACE)
        span = request.resource_spans[0].scope_spans[0].spans[0]
        self.assertEqual(span.trace_id.hex(), "5b8efff798038103d269b633813fc60c")
        self.assertEqual(span.parent_span_id.hex(), "eee19b7ec3c1b173")
        self.assertEqual(span.start_time_unix_nano, 1544712660000000000)
        self.assertEqual(span.kind, t.Span.SPAN_KIND_SERVER)
        # json_format reads the ids as base64: a different (wrong) value.
        generic = json_format.ParseDict(EXAMPLE_TRACE, ExportTraceServiceRequest())
        self.assertNotEqual(generic, request)

    def test_leniency(self) -> None:
        doc = {
            "resourceSpans": [
                {
                    "futureField": {"x": 1},
                    "scopeSpans": [
                        {
                            "spans": [
                                {
                                    "traceId": "",
                                    "spanId": None,
                                    "name": "n",
                                    "kind": "SPAN_KIND_PRODUCER",
                                    "startTimeUnixNano": 12,
                                    "endTimeUnixNano": "13",
                                    "status": {"code": "STATUS_CODE_OK"},
                                    "attributes": [
                                        {"key": "i", "value": {"intValue": "7"}},
                                        {"key": "d", "value": {"doubleValue": "NaN"}},
                                        {"key": "b", "value": {"bytesValue": "AP8="}},
                                    ],
                                    "unknown": [1, 2],
                                }
                            ]
                        }
                    ],
                }
            ],
            "extra": True,
        }
        # null as the field's default is the proto3 JSON mapping ("spec"); pdata refuses it.
        span = parse_request("traces", doc, strict=False).resource_spans[0].scope_spans[0].spans[0]
        self.assertEqual((span.trace_id, span.span_id), (b"", b""))
        self.assertEqual(span.kind, t.Span.SPAN_KIND_PRODUCER)
        self.assertEqual((span.start_time_unix_nano, span.end_time_unix_nano), (12, 13))
        self.assertEqual(span.status.code, t.Status.STATUS_CODE_OK)
        self.assertEqual(span.attributes[0].value.int_value, 7)
        self.assertTrue(math.isnan(span.attributes[1].value.double_value))
        self.assertEqual(span.attributes[2].value.bytes_value, b"\x00\xff")

    def test_errors(self) -> None:
        span = EXAMPLE_TRACE["resourceSpans"][0]["scopeSpans"][0]["spans"][0]  # type: ignore[index]
        cases = {
            "short span id": {**span, "spanId": "abcd"},
            "long trace id": {**span, "traceId": "00" * 17},
            "not hex": {**span, "traceId": "zz" * 16},
            "string kind": {**span, "kind": "SPAN_KIND_NOPE"},
            "float int64": {**span, "startTimeUnixNano": 1.5},
            "bool as int": {**span, "droppedAttributesCount": True},
            "number as name": {**span, "name": 5},
            "list as message": {**span, "status": [1]},
        }
        for label, bad in cases.items():
            with self.subTest(label):
                doc = {"resourceSpans": [{"scopeSpans": [{"spans": [bad]}]}]}
                with self.assertRaises(OTLPJSONError):
                    parse_request("traces", doc)
        with self.assertRaises(OTLPJSONError) as caught:
            parse_request(
                "traces", {"resourceSpans": [{"scopeSpans": [{"spans": [cases["short span id"]]}]}]}
            )
        self.assertEqual(caught.exception.field, "span_id")
        for document in ([], "x", 5):
            with self.assertRaises(OTLPJSONError):
                parse_request("logs", document)
        with self.assertRaises(OTLPJSONError):
            parse_request("logs", None, strict=False)
        # pdata reads a top-level null as an empty request.
        self.assertEqual(parse_request("logs", None), ExportLogsServiceRequest())


def one_span(**fields: Any) -> dict[str, Any]:
    return {"resourceSpans": [{"scopeSpans": [{"spans": [fields]}]}]}


def one_value(value: Any) -> dict[str, Any]:
    return one_span(attributes=[{"key": "k", "value": value}])


def read_span(doc: Any, *, strict: bool) -> t.Span:
    request = parse_request("traces", doc, strict=strict)
    return request.resource_spans[0].scope_spans[0].spans[0]  # type: ignore[attr-defined,no-any-return]


class ModesTest(unittest.TestCase):
    """Where pdata's JSON reading ("collector") and proto3 JSON's ("spec") differ, and agree."""

    def read(self, doc: Any, strict: bool) -> t.Span | None:
        try:
            return read_span(doc, strict=strict)
        except OTLPJSONError:
            return None

    def test_null(self) -> None:
        for label, doc in {
            "parent id": one_span(parentSpanId=None),
            "timestamp": one_span(startTimeUnixNano=None),
            "enum": one_span(kind=None),
            "count": one_span(droppedAttributesCount=None),
            "bool value": one_value({"boolValue": None}),
            "int value": one_value({"intValue": None}),
            "bytes value": one_value({"bytesValue": None}),
        }.items():
            with self.subTest(label):
                self.assertIsNone(self.read(doc, strict=True))  # pdata: 400
                self.assertIsNotNone(self.read(doc, strict=False))  # proto3: the default
        # Strings, messages and lists may be null in pdata too.
        span = read_span(one_span(name=None, status=None, events=None), strict=True)
        self.assertEqual((span.name, span.HasField("status"), len(span.events)), ("", True, 0))
        self.assertFalse(read_span(one_span(status=None), strict=False).HasField("status"))

    def test_null_string_value_is_an_empty_string_for_pdata(self) -> None:
        value = read_span(one_value({"stringValue": None}), strict=True).attributes[0].value
        self.assertEqual((value.WhichOneof("value"), value.string_value), ("string_value", ""))
        value = read_span(one_value({"stringValue": None}), strict=False).attributes[0].value
        self.assertIsNone(value.WhichOneof("value"))

    def test_integers(self) -> None:
        exact = 1544712660000000123
        for label, given, spec_reads in (
            ("float literal", 1.5e18, 1_500_000_000_000_000_000),
            ("exponent string", "1e3", 1000),
            ("integral float", 1.0, 1),
            ("decimal string", f"{exact}.0", exact),  # every digit kept, not 21 ns off
        ):
            with self.subTest(label):
                self.assertIsNone(self.read(one_span(startTimeUnixNano=given), strict=True))
                span = read_span(one_span(startTimeUnixNano=given), strict=False)
                self.assertEqual(span.start_time_unix_nano, spec_reads)
        for given in (1.5, "1.5", " 7", "7_0", "0x10", -5, "-5", True):
            with self.subTest(given=given):
                self.assertIsNone(self.read(one_span(startTimeUnixNano=given), strict=True))
                self.assertIsNone(self.read(one_span(startTimeUnixNano=given), strict=False))
        for given in ("+5", "5", 5):  # Go's ParseInt takes a sign...
            value = read_span(one_value({"intValue": given}), strict=True).attributes[0].value
            self.assertEqual(value.int_value, 5)
        # ...ParseUint does not.
        self.assertIsNone(self.read(one_span(droppedAttributesCount="+5"), strict=True))

    def test_base64(self) -> None:
        for label, text, spec_reads in (
            ("url-safe", "-_-_", b"\xfb\xff\xbf"),
            ("no padding", "Zm8", b"fo"),
        ):
            with self.subTest(label):
                self.assertIsNone(self.read(one_value({"bytesValue": text}), strict=True))
                value = read_span(one_value({"bytesValue": text}), strict=False).attributes[0]
                self.assertEqual(value.value.bytes_value, spec_reads)
        for text in ("Zm9v!", "Zm9v Zm9v", "Zg==Zg=="):
            with self.subTest(text=text):
                self.assertIsNone(self.read(one_value({"bytesValue": text}), strict=True))
                self.assertIsNone(self.read(one_value({"bytesValue": text}), strict=False))
        # Go's decoder skips line breaks.
        value = read_span(one_value({"bytesValue": "Zm9v\r\nYmFy"}), strict=True).attributes[0]
        self.assertEqual(value.value.bytes_value, b"foobar")

    def test_both_refuse(self) -> None:
        for label, doc in {
            "bool as 1": one_value({"boolValue": 1}),
            "bool as string": one_value({"boolValue": "true"}),
            "double too large": one_value({"doubleValue": 1e400}),
            "enum number as string": one_span(kind="2"),
            "id with spaces": one_span(traceId="00 " + "11" * 15 + "2"),
            "odd id": one_span(spanId="abc"),
        }.items():
            with self.subTest(label):
                self.assertIsNone(self.read(doc, strict=True))
                self.assertIsNone(self.read(doc, strict=False))

    def test_doubles_and_unknown_enums(self) -> None:
        for strict in (True, False):
            span = read_span(one_span(kind=7, status={"code": -1}), strict=strict)
            self.assertEqual((span.kind, span.status.code), (7, -1))
            for text in ("NaN", "Infinity", "-Infinity", "2.5"):
                value = read_span(one_value({"doubleValue": text}), strict=strict).attributes[0]
                self.assertEqual(str(value.value.double_value), str(float(text)))
        # Go's ParseFloat spellings, which proto3 JSON does not have.
        value = read_span(one_value({"doubleValue": "inf"}), strict=True).attributes[0]
        self.assertEqual(value.value.double_value, math.inf)
        self.assertIsNone(self.read(one_value({"doubleValue": "inf"}), strict=False))
