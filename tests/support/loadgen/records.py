"""Per-request records, time-window slicing and report computation.

Everything here is pure (no I/O except the JSONL helpers) so tests can build
synthetic records and check the report logic in isolation.
"""

import json
import math
from dataclasses import asdict, dataclass, fields

# Error kinds a failed record can carry.
ERROR_KINDS = ("connect_error", "tls", "reset", "timeout", "bad_response", "http_5xx", "http_4xx", "client_error")
PERCENTILES = (50, 90, 95, 99)


@dataclass(slots=True)
class Record:
    """Outcome of one logical request (a retried request is ONE record with ``retried=True``).

    Times: ``start`` is seconds since the run started (monotonic clock), ``wall``
    the wall-clock epoch at the same instant. ``latency_ms`` spans from the first
    attempt's start to the end of the final attempt (it includes a retry).
    """

    index: int
    start: float
    wall: float
    latency_ms: float
    ok: bool
    status: int | None = None
    version: str | None = None
    retried: bool = False
    reused: bool = False
    stale_reconnect: bool = False
    error_kind: str | None = None
    error: str | None = None
    retry_error: str | None = None
    worker: int = 0

    @property
    def end(self):
        """Offset (seconds since run start) at which the request completed."""
        return self.start + self.latency_ms / 1000.0

    def to_dict(self):
        """Plain dict (JSON-serialisable)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data):
        """Build a record from :meth:`to_dict` output, ignoring unknown keys."""
        names = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


def slice_records(records, start=None, end=None, clock="offset"):
    """Return the records whose start time lies in ``[start, end)``.

    ``clock="offset"`` compares against :attr:`Record.start` (seconds since run
    start, e.g. values from ``LoadGenerator.mark()``); ``clock="wall"`` compares
    against :attr:`Record.wall` (``time.time()`` values). ``None`` means unbounded.
    """
    if clock not in ("offset", "wall"):
        raise ValueError("clock must be 'offset' or 'wall'")
    attr = "start" if clock == "offset" else "wall"
    selected = []
    for record in records:
        value = getattr(record, attr)
        if start is not None and value < start:
            continue
        if end is not None and value >= end:
            continue
        selected.append(record)
    return selected


def percentile(sorted_values, pct):
    """Nearest-rank percentile of an already sorted list (``None`` if empty)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary(records):
    """Latency stats (ms) over the given records: p50/p90/p95/p99/max/min/mean; ``None`` values if empty."""
    values = sorted(record.latency_ms for record in records)
    summary = {f"p{pct}": _round(percentile(values, pct)) for pct in PERCENTILES}
    summary["max"] = _round(values[-1]) if values else None
    summary["min"] = _round(values[0]) if values else None
    summary["mean"] = _round(sum(values) / len(values)) if values else None
    return summary


def compute_report(records, duration=None, max_samples=20):
    """Compute the summary report (a JSON-serialisable dict) from records.

    ``duration`` (seconds) defaults to the span from the earliest start to the
    latest end among ``records``. Keys:

    total, ok, failed, failed_by_kind, retries, retried_ok, reused, stale_reconnects, status_counts,
    versions, versions_missing, version_spans, latency_ms, duration_s,
    achieved_rps, failure_samples, retry_samples.
    """
    records = sorted(records, key=lambda rec: (rec.start, rec.index))
    ok_records = [rec for rec in records if rec.ok]
    failed = [rec for rec in records if not rec.ok]
    failed_by_kind = {}
    for rec in failed:
        kind = rec.error_kind or "unknown"
        failed_by_kind[kind] = failed_by_kind.get(kind, 0) + 1
    status_counts = {}
    versions = {}
    version_spans = {}
    versions_missing = 0
    for rec in records:
        if rec.status is None:
            continue
        key = str(rec.status)
        status_counts[key] = status_counts.get(key, 0) + 1
        if rec.version is None:
            versions_missing += 1
            continue
        versions[rec.version] = versions.get(rec.version, 0) + 1
        span = version_spans.setdefault(rec.version, [rec.start, rec.start])
        span[0] = min(span[0], rec.start)
        span[1] = max(span[1], rec.start)
    if duration is None:
        duration = (max(rec.end for rec in records) - records[0].start) if records else 0.0
    retried = [rec for rec in records if rec.retried]
    return {
        "total": len(records),
        "ok": len(ok_records),
        "failed": len(failed),
        "failed_by_kind": dict(sorted(failed_by_kind.items())),
        "retries": len(retried),
        "retried_ok": sum(1 for rec in retried if rec.ok),
        "reused": sum(1 for rec in records if rec.reused),
        "stale_reconnects": sum(1 for rec in records if rec.stale_reconnect),
        "status_counts": dict(sorted(status_counts.items())),
        "versions": dict(sorted(versions.items())),
        "versions_missing": versions_missing,
        "version_spans": {ver: [round(a, 4), round(b, 4)] for ver, (a, b) in sorted(version_spans.items())},
        "latency_ms": latency_summary(ok_records),
        "duration_s": round(duration, 4),
        "achieved_rps": round(len(records) / duration, 1) if duration > 0 else 0.0,
        "failure_samples": [rec.to_dict() for rec in failed[:max_samples]],
        "retry_samples": [rec.to_dict() for rec in retried[:max_samples]],
    }


def write_records_jsonl(records, path):
    """Write one JSON object per record to ``path``."""
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record.to_dict(), separators=(",", ":")))
            handle.write("\n")


def read_records_jsonl(path):
    """Read records written by :func:`write_records_jsonl`."""
    with open(path, encoding="utf-8") as handle:
        return [Record.from_dict(json.loads(line)) for line in handle if line.strip()]


def _round(value, digits=3):
    return None if value is None else round(value, digits)
