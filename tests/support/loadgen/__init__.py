"""Loopback-only HTTP/1.1 load generator for zero-downtime rollout tests.

See README.md next to this file. Public API::

    LoadGenerator, run, compute_report, slice_records, Record,
    read_records_jsonl, write_records_jsonl, parse_target, UnsafeTargetError
"""

from .generator import MAX_CONCURRENCY, MAX_DURATION_S, MAX_REQUESTS, LoadGenerator, run
from .records import ERROR_KINDS, Record, compute_report, read_records_jsonl, slice_records, write_records_jsonl
from .safety import UnsafeTargetError, is_loopback_ip, parse_target

__all__ = [
    "ERROR_KINDS",
    "MAX_CONCURRENCY",
    "MAX_DURATION_S",
    "MAX_REQUESTS",
    "LoadGenerator",
    "Record",
    "UnsafeTargetError",
    "compute_report",
    "is_loopback_ip",
    "parse_target",
    "read_records_jsonl",
    "run",
    "slice_records",
    "write_records_jsonl",
]
