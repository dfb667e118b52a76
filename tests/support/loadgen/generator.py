"""The load generator: fixed-concurrency worker threads, optional rate limit, bounded runs."""

import threading
import time

from .client import IDEMPOTENT_METHODS, AttemptError, HttpClient, build_request, build_ssl_context
from .records import Record, compute_report, slice_records
from .safety import parse_target

MAX_DURATION_S = 600.0
MAX_REQUESTS = 5_000_000
MAX_CONCURRENCY = 256
MAX_RATE = 100_000.0
MAX_TIMEOUT_S = 60.0
DEFAULT_DURATION_S = 10.0
DEFAULT_VERSION_HEADER = "X-App-Version"
_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def _normalise_headers(headers):
    """Accept a dict, ``(name, value)`` pairs or ``"Name: value"`` strings; return a list of pairs."""
    if headers is None:
        return []
    if isinstance(headers, dict):
        return [(str(name), str(value)) for name, value in headers.items()]
    pairs = []
    for item in headers:
        if isinstance(item, str):
            name, sep, value = item.partition(":")
            if not sep:
                raise ValueError(f"header {item!r} must look like 'Name: value'")
            pairs.append((name.strip(), value.strip()))
        else:
            name, value = item
            pairs.append((str(name), str(value)))
    return pairs


def _check_range(name, value, low, high, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value <= high:
        raise ValueError(f"{name} must be a number in ({low}, {high}], got {value!r}")
    return value


class _Scheduler:
    """Hands out request slots: enforces the request bound and (optionally) even spacing at ``rate``."""

    def __init__(self, max_requests, rate, t0):
        self._lock = threading.Lock()
        self._next = 0
        self.max_requests = max_requests
        self.interval = 1.0 / rate if rate else None
        self.t0 = t0

    def claim(self):
        """Return ``(index, slot_time or None)`` or ``None`` once the request bound is reached."""
        with self._lock:
            index = self._next
            if index >= self.max_requests:
                return None
            self._next = index + 1
        return index, (self.t0 + index * self.interval if self.interval else None)


class LoadGenerator:
    """Continuous HTTP load against ONE loopback URL, recording every request.

    The URL is validated (loopback only) in the constructor, before anything is
    sent; a non-loopback target raises :class:`loadgen.UnsafeTargetError` (a
    ``ValueError``). Every run stops by itself after ``duration`` seconds or
    ``max_requests`` requests, whichever comes first.

    Usage::

        with LoadGenerator("http://127.0.0.1:8080/", rate=500, duration=60) as gen:
            gen.mark("rollout")
            ...  # do the rollout
            gen.mark("rollout_done")
        report = gen.report()

    Parameters: ``concurrency`` worker threads, each with ONE persistent
    connection; ``rate`` total requests/s, evenly spaced (None = unlimited);
    ``duration`` max seconds (<= 600); ``max_requests`` max total (<= 5,000,000);
    ``timeout`` per-attempt seconds; ``method``/``headers`` (dict, pairs or
    "Name: value" strings)/``body`` (str or bytes); ``keepalive=False`` sends
    ``Connection: close`` and reconnects per request; ``retry`` enables the single
    keep-alive-race retry (idempotent methods only unless ``retry_non_idempotent``);
    ``version_header`` response header to tally (None disables); ``insecure``/
    ``cafile``/``sni`` for https (``sni`` also becomes the Host header);
    ``fail_on_4xx`` counts 4xx as failures; ``max_samples`` failure samples kept.
    """

    def __init__(self, url, *, concurrency=8, rate=None, duration=DEFAULT_DURATION_S, max_requests=MAX_REQUESTS,
                 timeout=5.0, method="GET", headers=None, body=None, keepalive=True, retry=True,
                 retry_non_idempotent=False, version_header=DEFAULT_VERSION_HEADER, insecure=False, cafile=None,
                 sni=None, fail_on_4xx=False, max_samples=20):
        self.target = parse_target(url)
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= MAX_CONCURRENCY:
            raise ValueError(f"concurrency must be an integer in [1, {MAX_CONCURRENCY}], got {concurrency!r}")
        if isinstance(max_requests, bool) or not isinstance(max_requests, int) or not 1 <= max_requests <= MAX_REQUESTS:
            raise ValueError(f"max_requests must be an integer in [1, {MAX_REQUESTS}], got {max_requests!r}")
        self.concurrency = concurrency
        self.max_requests = max_requests
        self.rate = _check_range("rate", rate, 0, MAX_RATE, allow_none=True)
        self.duration = float(_check_range("duration", duration, 0, MAX_DURATION_S))
        self.timeout = float(_check_range("timeout", timeout, 0, MAX_TIMEOUT_S))
        self.method = str(method).upper()
        if not self.method or not set(self.method) <= _TOKEN_CHARS:
            raise ValueError(f"invalid method {method!r}")
        self.keepalive = bool(keepalive)
        self.retry = bool(retry) and (retry_non_idempotent or self.method in IDEMPOTENT_METHODS)
        self.fail_on_4xx = bool(fail_on_4xx)
        self.max_samples = int(max_samples)
        self.version_header = version_header
        header_pairs = _normalise_headers(headers)
        if sni is not None and not self.target.is_tls:
            raise ValueError("sni only applies to https URLs")
        host_header = sni or self.target.host_header
        if sni and self.target.port != 443:
            host_header = f"{sni}:{self.target.port}"
        ssl_context = None
        if self.target.is_tls:
            try:
                ssl_context = build_ssl_context(insecure=insecure, cafile=cafile)
            except OSError as exc:  # includes ssl.SSLError
                raise ValueError(f"cannot load cafile {cafile!r}: {exc}") from exc
        elif insecure or cafile:
            raise ValueError("insecure/cafile only apply to https URLs")
        self.options = {
            "url": url, "concurrency": concurrency, "rate": rate, "duration": self.duration,
            "max_requests": max_requests, "timeout": self.timeout, "method": self.method,
            "keepalive": self.keepalive, "retry": self.retry, "version_header": version_header,
            "insecure": bool(insecure), "cafile": cafile, "sni": sni, "fail_on_4xx": self.fail_on_4xx,
        }
        self.client = HttpClient(
            self.target,
            build_request(self.method, self.target.path, host_header, header_pairs, body, self.keepalive),
            self.method, self.keepalive, version_header, ssl_context, sni or self.target.host,
        )
        self._stop_event = threading.Event()
        self._threads = []
        self._worker_records = []
        self._exit_reasons = []
        self._marks = {}
        self._t0 = None
        self._wall0 = None
        self._finished_at = None
        self._stop_requested_while_running = False

    # -- lifecycle ----------------------------------------------------------

    def start(self):
        """Start the worker threads (non-blocking) and return ``self``. A generator runs once."""
        if self._t0 is not None:
            raise RuntimeError("LoadGenerator already started; create a new one")
        self._t0 = time.monotonic()
        self._wall0 = time.time()
        scheduler = _Scheduler(self.max_requests, self.rate, self._t0)
        deadline = self._t0 + self.duration
        for worker_id in range(self.concurrency):
            records = []
            self._worker_records.append(records)
            thread = threading.Thread(target=self._worker, args=(worker_id, scheduler, deadline, records),
                                      name=f"loadgen-worker-{worker_id}", daemon=True)
            self._threads.append(thread)
            thread.start()
        return self

    def stop(self, timeout=None):
        """Stop gracefully: no new requests, in-flight ones finish. Returns :meth:`report`."""
        if self.running:
            self._stop_requested_while_running = True
        self._stop_event.set()
        self.wait(timeout if timeout is not None else 2 * self.timeout + 5)
        return self.report()

    def wait(self, timeout=None):
        """Block until the run ends by itself (or ``timeout`` s pass). Returns True if finished."""
        end = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if end is None else max(0.0, end - time.monotonic()))
        return not self.running

    @property
    def running(self):
        """True while any worker thread is alive."""
        return any(thread.is_alive() for thread in self._threads)

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, traceback):
        self.stop()
        return False

    # -- results ------------------------------------------------------------

    def now(self):
        """Seconds since the run started (the clock of :attr:`Record.start`)."""
        if self._t0 is None:
            raise RuntimeError("not started")
        return time.monotonic() - self._t0

    def mark(self, label):
        """Remember the current run offset under ``label`` (for :meth:`records_between`); returns it."""
        self._marks[label] = self.now()
        return self._marks[label]

    @property
    def marks(self):
        """``{label: offset_seconds}`` of all marks."""
        return dict(self._marks)

    @property
    def records(self):
        """Snapshot of all records so far, ordered by start time."""
        merged = []
        for records in self._worker_records:
            merged.extend(list(records))
        merged.sort(key=lambda rec: (rec.start, rec.index))
        return merged

    def records_between(self, start=None, end=None):
        """Records started in ``[start, end)``; bounds are offsets (float) or mark labels (str)."""
        return slice_records(self.records, self._resolve_mark(start), self._resolve_mark(end))

    def report(self, start=None, end=None):
        """Summary dict (see :func:`loadgen.compute_report`), optionally for a window like :meth:`records_between`.

        Adds ``stopped_by`` (stop/duration/requests/running), ``marks`` and ``options``.
        """
        if self._t0 is None:
            raise RuntimeError("not started")
        records = self.records_between(start, end)
        if start is None and end is None:
            finish = self._finished_at if not self.running and self._finished_at else time.monotonic()
            duration = finish - self._t0
        else:
            duration = None
        report = compute_report(records, duration=duration, max_samples=self.max_samples)
        report["stopped_by"] = self._stopped_by()
        report["started_at"] = self._wall0
        report["marks"] = {label: round(offset, 4) for label, offset in self._marks.items()}
        report["options"] = dict(self.options)
        return report

    def _resolve_mark(self, bound):
        if isinstance(bound, str):
            if bound not in self._marks:
                raise KeyError(f"unknown mark {bound!r}")
            return self._marks[bound]
        return bound

    def _stopped_by(self):
        if self.running:
            return "running"
        if self._stop_requested_while_running:
            return "stop"
        return "requests" if "requests" in self._exit_reasons else "duration"

    # -- worker -------------------------------------------------------------

    def _worker(self, worker_id, scheduler, deadline, records):
        conn_holder = [None]
        reason = "stop"
        try:
            while not self._stop_event.is_set():
                if time.monotonic() >= deadline:
                    reason = "duration"
                    break
                claim = scheduler.claim()
                if claim is None:
                    reason = "requests"
                    break
                index, slot = claim
                if slot is not None:
                    if slot >= deadline:
                        reason = "duration"
                        break
                    delay = slot - time.monotonic()
                    if delay > 0 and self._stop_event.wait(delay):
                        break
                records.append(self._perform(index, worker_id, conn_holder))
        finally:
            if conn_holder[0] is not None:
                conn_holder[0].close()
            self._exit_reasons.append(reason)
            finished = time.monotonic()
            if self._finished_at is None or finished > self._finished_at:
                self._finished_at = finished

    def _perform(self, index, worker_id, conn_holder):
        """Run one logical request (with at most one keep-alive-race retry) and return its record."""
        started = time.monotonic()
        base = {"index": index, "start": started - self._t0, "wall": time.time(), "worker": worker_id}
        retry_error = None
        stale = False
        while True:
            conn = conn_holder[0]
            if conn is not None and self.client.peer_closed(conn):
                self._drop_connection(conn_holder, conn)
                conn, stale = None, True
            reused = conn is not None
            try:
                deadline = time.monotonic() + self.timeout
                if conn is None:
                    conn = conn_holder[0] = self.client.connect(deadline)
                response = self.client.exchange(conn, deadline)
            except AttemptError as err:
                self._drop_connection(conn_holder, conn)
                if reused and retry_error is None and self.retry and err.is_keepalive_race:
                    retry_error = f"{err.kind}: {err.message}"
                    continue
                kind, message = err.kind, err.message
            except Exception as exc:  # pylint: disable=broad-except  # a worker must never die silently
                self._drop_connection(conn_holder, conn)
                kind, message = "client_error", f"{type(exc).__name__}: {exc}"
            else:
                if not response.keep_alive:
                    self._drop_connection(conn_holder, conn)
                status = response.status
                kind = None
                if status >= 500:
                    kind = "http_5xx"
                elif status >= 400 and self.fail_on_4xx:
                    kind = "http_4xx"
                return Record(**base, latency_ms=(time.monotonic() - started) * 1000.0, ok=kind is None, status=status,
                              version=response.version, retried=retry_error is not None, reused=reused,
                              stale_reconnect=stale, error_kind=kind,
                              error=f"HTTP {status}" if kind else None, retry_error=retry_error)
            return Record(**base, latency_ms=(time.monotonic() - started) * 1000.0, ok=False, retried=retry_error is not None,
                          reused=reused, stale_reconnect=stale, error_kind=kind, error=message, retry_error=retry_error)

    @staticmethod
    def _drop_connection(conn_holder, conn):
        if conn is not None:
            conn.close()
        conn_holder[0] = None


def run(url, **options):
    """Blocking run: start a :class:`LoadGenerator`, wait until it ends by itself, return its report."""
    generator = LoadGenerator(url, **options)
    with generator:
        generator.wait()
    return generator.report()
