"""Command line interface: ``python -m loadgen URL [options]``.

Exit codes: 0 = failed requests <= --max-failed, 1 = more failures than that,
2 = usage error or unsafe (non-loopback) target.
"""

import argparse
import json
import sys

from .generator import DEFAULT_DURATION_S, DEFAULT_VERSION_HEADER, MAX_DURATION_S, MAX_REQUESTS, LoadGenerator
from .records import write_records_jsonl

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def build_parser():
    """The argparse parser (argparse itself exits with code 2 on usage errors)."""
    parser = argparse.ArgumentParser(
        prog="python -m loadgen",
        description="Loopback-only HTTP/1.1 load generator that records every request.",
    )
    parser.add_argument("url", help="http(s) URL on 127.0.0.0/8, ::1 or localhost")
    parser.add_argument("-c", "--concurrency", type=int, default=8, help="worker connections (default 8)")
    parser.add_argument("-r", "--rate", type=float, default=None, help="total requests/s, evenly spaced (default unlimited)")
    parser.add_argument("-n", "--requests", type=int, default=MAX_REQUESTS, help=f"max total requests (default/cap {MAX_REQUESTS})")
    parser.add_argument("-d", "--duration", type=float, default=DEFAULT_DURATION_S,
                        help=f"max seconds (default {DEFAULT_DURATION_S:g}, cap {MAX_DURATION_S:g})")
    parser.add_argument("-t", "--timeout", type=float, default=5.0, help="per-request timeout in s (default 5)")
    parser.add_argument("-X", "--method", default="GET", help="HTTP method (default GET)")
    parser.add_argument("-H", "--header", action="append", default=[], metavar="'Name: value'", help="extra header (repeatable)")
    body = parser.add_mutually_exclusive_group()
    body.add_argument("--body", default=None, help="request body (string)")
    body.add_argument("--body-file", default=None, help="read the request body from this file")
    parser.add_argument("--no-keepalive", action="store_true", help="new connection per request (sends Connection: close)")
    parser.add_argument("--no-retry", action="store_true", help="never retry, even on the keep-alive close race")
    parser.add_argument("--retry-non-idempotent", action="store_true", help="allow the keep-alive-race retry for POST/PATCH too")
    parser.add_argument("--version-header", default=DEFAULT_VERSION_HEADER, help=f"response header to tally (default {DEFAULT_VERSION_HEADER})")
    parser.add_argument("--insecure", action="store_true", help="https: do not verify the certificate")
    parser.add_argument("--cafile", default=None, help="https: CA bundle / self-signed cert to verify against")
    parser.add_argument("--sni", default=None, help="https: TLS server name (SNI + verification); also the default Host header")
    parser.add_argument("--fail-on-4xx", action="store_true", help="count 4xx responses as failures (kind http_4xx)")
    parser.add_argument("--max-failed", type=int, default=0, help="exit 1 only if more requests than this failed (default 0)")
    parser.add_argument("--samples", type=int, default=20, help="failure samples kept in the report (default 20)")
    parser.add_argument("--json-out", default=None, metavar="FILE", help="write the report as JSON")
    parser.add_argument("--records-out", default=None, metavar="FILE.jsonl", help="write every request record as JSON lines")
    parser.add_argument("-q", "--quiet", action="store_true", help="no human-readable summary")
    return parser


def format_report(report):
    """Short human-readable table for a report dict."""
    options = report.get("options", {})
    rate = options.get("rate")
    lines = [
        f"loadgen {options.get('url', '')}  concurrency={options.get('concurrency')} "
        f"rate={'unlimited' if not rate else f'{rate:g}/s'} keepalive={'on' if options.get('keepalive', True) else 'off'} "
        f"stopped_by={report.get('stopped_by', '-')}",
        f"  total     {report['total']}  ok {report['ok']}  failed {report['failed']}  retries {report['retries']}  "
        f"duration {report['duration_s']:.2f} s  rate {report['achieved_rps']:.1f} req/s",
        f"  status    {_pairs(report['status_counts'])}",
        f"  versions  {_pairs(report['versions'])}" + (f"  (missing {report['versions_missing']})" if report['versions_missing'] else ""),
    ]
    latency = report["latency_ms"]
    if latency["max"] is None:
        lines.append("  latency   (no successful requests)")
    else:
        lines.append("  latency   " + "  ".join(f"{key} {latency[key]:.2f}" for key in ("p50", "p90", "p95", "p99", "max")) + " ms")
    lines.append(f"  failures  {_pairs(report['failed_by_kind'])}")
    for sample in report["failure_samples"][:5]:
        lines.append(f"    #{sample['index']} t={sample['start']:.3f}s status={sample['status']} {sample['error_kind']}: {sample['error']}")
    return "\n".join(lines)


def _pairs(mapping):
    return " ".join(f"{key}={value}" for key, value in mapping.items()) or "(none)"


def main(argv=None):
    """Run the CLI; returns the process exit code."""
    args = build_parser().parse_args(argv)
    body = args.body
    try:
        if args.body_file:
            with open(args.body_file, "rb") as handle:
                body = handle.read()
        generator = LoadGenerator(
            args.url, concurrency=args.concurrency, rate=args.rate, duration=args.duration, max_requests=args.requests,
            timeout=args.timeout, method=args.method, headers=args.header, body=body, keepalive=not args.no_keepalive,
            retry=not args.no_retry, retry_non_idempotent=args.retry_non_idempotent, version_header=args.version_header,
            insecure=args.insecure, cafile=args.cafile, sni=args.sni, fail_on_4xx=args.fail_on_4xx, max_samples=args.samples,
        )
    except (ValueError, OSError) as exc:
        print(f"loadgen: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    generator.start()
    try:
        generator.wait()
    except KeyboardInterrupt:
        print("loadgen: interrupted, stopping", file=sys.stderr)
    report = generator.stop()
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2, sort_keys=True)
    if args.records_out:
        write_records_jsonl(generator.records, args.records_out)
    if not args.quiet:
        print(format_report(report))
    return EXIT_FAILED if report["failed"] > args.max_failed else EXIT_OK
