"""Received metrics: :class:`Metric` views and their decoded :class:`DataPoint` values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mocksup.otlp._values import attributes_of, jsonable, jsonable_attrs
from mocksup.otlp.items import _View

__all__ = ("DataPoint", "Metric")


@dataclass(frozen=True, slots=True)
class DataPoint:
    """One data point of a metric.

    ``value`` holds a gauge's or sum's number; histograms and summaries fill ``count`` and
    ``sum``, and the rest of their fields (``bucket_counts``, ``explicit_bounds``, ``min``,
    ``max``, ``scale``, ``zero_count``, ``positive``, ``negative``, ``quantile_values``) are
    in ``extra``.
    """

    attributes: Mapping[str, Any]
    start_time_unix_nano: int
    time_unix_nano: int
    value: int | float | None = None
    count: int | None = None
    sum: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_protobuf(cls, kind: str, p: Any) -> DataPoint:
        """Build it from a data point message of a metric of type ``kind``."""
        attrs = attributes_of(p.attributes)
        if kind in ("gauge", "sum"):
            which = p.WhichOneof("value")
            value = getattr(p, which) if which else None
            return cls(attrs, p.start_time_unix_nano, p.time_unix_nano, value)
        if kind == "summary":
            quantiles = [{"quantile": q.quantile, "value": q.value} for q in p.quantile_values]
            extra: dict[str, Any] = {"quantile_values": quantiles}
            return cls(attrs, p.start_time_unix_nano, p.time_unix_nano, None, p.count, p.sum, extra)
        optional = {name: getattr(p, name) if p.HasField(name) else None for name in ("min", "max")}
        if kind == "histogram":
            extra = {
                "bucket_counts": list(p.bucket_counts),
                "explicit_bounds": list(p.explicit_bounds),
                **optional,
            }
        else:
            extra = {
                "scale": p.scale,
                "zero_count": p.zero_count,
                "positive": {
                    "offset": p.positive.offset,
                    "bucket_counts": list(p.positive.bucket_counts),
                },
                "negative": {
                    "offset": p.negative.offset,
                    "bucket_counts": list(p.negative.bucket_counts),
                },
                **optional,
            }
        total = p.sum if p.HasField("sum") else None
        return cls(attrs, p.start_time_unix_nano, p.time_unix_nano, None, p.count, total, extra)

    def to_json(self) -> dict[str, Any]:
        """The control API's JSON form (NaN and infinities as ``"NaN"``, ``"Infinity"``...)."""
        return {
            "attributes": jsonable_attrs(self.attributes),
            "start_time_unix_nano": self.start_time_unix_nano,
            "time_unix_nano": self.time_unix_nano,
            "value": jsonable(self.value),
            "count": self.count,
            "sum": jsonable(self.sum),
            **{key: jsonable(value) for key, value in self.extra.items()},
        }


class Metric(_View):
    """One received metric (of one export) with its data points.

    ``type`` is ``"gauge"``, ``"sum"``, ``"histogram"``, ``"exponential_histogram"`` or
    ``"summary"``; ``aggregation_temporality`` is 1 for delta, 2 for cumulative, 0 for gauges
    and summaries. ``attributes`` are the metric's ``metadata``.
    """

    __slots__ = ()
    _fields = ("name", "type", "unit", "data_points")

    @property
    def attributes(self) -> Mapping[str, Any]:
        """The metric's ``metadata`` attributes."""
        if self._attributes is None:
            self._attributes = attributes_of(self._pb.metadata)
        return self._attributes

    @property
    def name(self) -> str:
        """The metric name."""
        return str(self._pb.name)

    @property
    def description(self) -> str:
        """The metric description."""
        return str(self._pb.description)

    @property
    def unit(self) -> str:
        """The metric unit."""
        return str(self._pb.unit)

    @property
    def type(self) -> str | None:
        """The data type, ``None`` if the metric has no data."""
        kind = self._pb.WhichOneof("data")
        return str(kind) if kind else None

    @property
    def aggregation_temporality(self) -> int:
        """1 delta, 2 cumulative, 0 when the type has none."""
        kind = self.type
        return int(getattr(self._pb, kind).aggregation_temporality) if kind in _TEMPORAL else 0

    @property
    def is_monotonic(self) -> bool:
        """Whether a sum is monotonic (``False`` for other types)."""
        return self.type == "sum" and bool(self._pb.sum.is_monotonic)

    @property
    def data_points(self) -> tuple[DataPoint, ...]:
        """The data points, decoded."""
        kind = self.type
        if kind is None:
            return ()
        return tuple(DataPoint.from_protobuf(kind, p) for p in getattr(self._pb, kind).data_points)

    def to_json(self) -> dict[str, Any]:
        """The control API's JSON form (without resource and scope)."""
        return {
            "name": self.name,
            "description": self.description,
            "unit": self.unit,
            "type": self.type,
            "aggregation_temporality": self.aggregation_temporality,
            "is_monotonic": self.is_monotonic,
            "data_points": [p.to_json() for p in self.data_points],
            "metadata": jsonable_attrs(self.attributes),
        }


_TEMPORAL = ("sum", "histogram", "exponential_histogram")
