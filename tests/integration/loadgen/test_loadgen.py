"""Tests for the loopback-only load generator in tests/support/loadgen.

Every server is a scripted, threaded server on a free loopback port, started
through the ``server`` fixture, which stops all of them even when a test fails.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SUPPORT = HERE.parents[1] / "support"
for _path in (str(SUPPORT), str(HERE)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import loadgen  # noqa: E402
from loadgen import LoadGenerator, Record, UnsafeTargetError, compute_report, run, slice_records  # noqa: E402
from loadgen.cli import main as cli_main  # noqa: E402
from loadgen_testserver import Close, Hang, Reset, Respond, ScriptedServer  # noqa: E402


@pytest.fixture
def server():
    """Factory: ``server(behaviour, **kwargs)`` -> started :class:`ScriptedServer`; all stopped at teardown."""
    started = []

    def factory(behaviour=None, **kwargs):
        srv = ScriptedServer(behaviour, **kwargs) if behaviour else ScriptedServer(**kwargs)
        started.append(srv)
        return srv.start()

    yield factory
    for srv in started:
        srv.stop()


@pytest.fixture
def connect_guard(monkeypatch):
    """Record (and block) every outgoing socket connect attempt."""
    attempts = []

    def guarded(self, address, *args):
        attempts.append(address)
        raise AssertionError(f"unexpected connect to {address!r}")

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded)
    return attempts


def free_port():
    """A loopback port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_cli(*args, timeout=60):
    """Run ``python -m loadgen`` in a subprocess with PYTHONPATH=tests/support."""
    env = dict(os.environ, PYTHONPATH=str(SUPPORT))
    return subprocess.run([sys.executable, "-m", "loadgen", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)


# -- basic behaviour -------------------------------------------------------------


def test_basic_run_counts_versions_and_latency(server):
    srv = server(lambda req: Respond(version="v2" if req.index % 4 == 0 else "v1"))
    report = run(srv.url("/health?x=1"), concurrency=4, max_requests=300, duration=20)
    assert report["total"] == 300 and report["ok"] == 300 and report["failed"] == 0
    assert report["retries"] == 0 and report["failed_by_kind"] == {}
    assert report["status_counts"] == {"200": 300}
    assert report["versions"] == {"v1": 225, "v2": 75}
    assert report["versions_missing"] == 0
    assert report["stopped_by"] == "requests"
    lat = report["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert srv.requests == 300
    assert {req.path for req in srv.seen} == {"/health?x=1"}
    assert srv.seen[0].headers["host"] == f"127.0.0.1:{srv.port}"
    json.dumps(report)  # report is JSON-serialisable


def test_method_headers_and_body_are_sent(server):
    srv = server()
    report = run(srv.url("/submit"), method="POST", headers={"X-Test": "1", "Host": "app.test"}, body='{"a": 1}', max_requests=5, concurrency=1)
    assert report["ok"] == 5
    req = srv.seen[-1]
    assert (req.method, req.headers["x-test"], req.headers["host"], req.body) == ("POST", "1", "app.test", b'{"a": 1}')


def test_body_framing_chunked_head_and_read_until_close(server):
    def behaviour(req):
        if req.index % 3 == 0:
            return Respond(body=b"x" * 5000, chunked=True)
        if req.index % 3 == 1:
            return Respond(body=b"y" * 3000, no_length=True)
        return Respond(status=204, body=b"")

    srv = server(behaviour)
    report = run(srv.url(), concurrency=1, max_requests=30)
    assert report["ok"] == 30 and report["failed"] == 0 and report["retries"] == 0
    assert report["status_counts"] == {"200": 20, "204": 10}
    # read-until-close responses force a reconnect: 10 of them -> 11 connections
    assert srv.connections == 11


# -- keep-alive ------------------------------------------------------------------


def test_keepalive_reuses_one_connection_per_worker(server):
    srv = server()
    gen = LoadGenerator(srv.url(), concurrency=4, max_requests=400)
    with gen:
        assert gen.wait(20)
    report = gen.report()
    assert report["ok"] == 400
    assert 1 <= srv.connections <= 4
    assert report["reused"] == 400 - srv.connections
    assert {rec.worker for rec in gen.records} == set(range(srv.connections))


def test_no_keepalive_opens_a_connection_per_request(server):
    srv = server()
    report = run(srv.url(), concurrency=4, max_requests=400, keepalive=False)
    assert report["ok"] == 400 and report["failed"] == 0
    assert srv.connections == 400
    assert report["reused"] == 0
    assert all(req.headers.get("connection") == "close" for req in srv.seen)


def test_connection_close_from_server_is_honoured(server):
    srv = server(lambda req: Respond(close=True))
    report = run(srv.url(), concurrency=2, max_requests=50)
    assert report["ok"] == 50 and report["failed"] == 0
    assert report["retries"] == 0  # a client ignoring Connection: close would hit EOF and retry
    assert srv.connections == 50
    assert report["reused"] == 0


# -- bounds and rate -------------------------------------------------------------


def test_request_bound_is_exact(server):
    srv = server()
    gen = LoadGenerator(srv.url(), concurrency=8, max_requests=137, duration=30)
    with gen:
        assert gen.wait(20)
    assert len(gen.records) == 137 and srv.requests == 137
    assert sorted(rec.index for rec in gen.records) == list(range(137))
    assert gen.report()["stopped_by"] == "requests"


def test_duration_bound_stops_on_time(server):
    srv = server()
    started = time.monotonic()
    report = run(srv.url(), concurrency=4, duration=1.0)
    elapsed = time.monotonic() - started
    assert 0.95 <= elapsed < 1.6
    assert report["stopped_by"] == "duration"
    assert 0.95 <= report["duration_s"] < 1.6
    assert report["total"] > 50 and report["failed"] == 0


def test_rate_limit_is_respected_and_evenly_spaced(server):
    srv = server()
    gen = LoadGenerator(srv.url(), concurrency=8, rate=200, duration=1.0)
    with gen:
        assert gen.wait(10)
    records = gen.records
    assert 170 <= len(records) <= 230
    first_half = len(slice_records(records, 0.0, 0.5))
    assert 80 <= first_half <= 120  # even spacing, not one burst
    assert gen.report()["failed"] == 0


def test_stop_is_graceful_and_context_manager_always_stops(server):
    srv = server()
    gen = LoadGenerator(srv.url(), concurrency=4, rate=500, duration=30)
    gen.start()
    time.sleep(0.3)
    assert gen.running and gen.report()["stopped_by"] == "running" and len(gen.records) > 0
    started = time.monotonic()
    report = gen.stop()
    assert time.monotonic() - started < 2
    assert not gen.running
    assert report["stopped_by"] == "stop" and report["failed"] == 0 and report["total"] > 50
    with pytest.raises(RuntimeError, match="boom"):
        with LoadGenerator(srv.url(), concurrency=2, rate=100, duration=30) as gen2:
            raise RuntimeError("boom")
    assert not gen2.running


@pytest.mark.parametrize("kwargs", [
    {"duration": 601}, {"duration": 0}, {"max_requests": 5_000_001}, {"max_requests": 0}, {"concurrency": 0},
    {"concurrency": 1000}, {"rate": -1}, {"timeout": 0}, {"method": "GE T"}, {"headers": ["NoColon"]},
])
def test_invalid_options_are_refused(kwargs):
    with pytest.raises(ValueError):
        LoadGenerator("http://127.0.0.1:9/", **kwargs)


# -- failures --------------------------------------------------------------------


def test_5xx_counted_as_failed(server):
    srv = server(lambda req: Respond(status=503) if req.index % 5 == 0 else Respond())
    report = run(srv.url(), concurrency=2, max_requests=100)
    assert report["failed"] == 20 and report["ok"] == 80
    assert report["failed_by_kind"] == {"http_5xx": 20}
    assert report["status_counts"] == {"200": 80, "503": 20}
    assert report["failure_samples"][0]["status"] == 503
    assert report["retries"] == 0


def test_4xx_ok_by_default_failed_on_request(server):
    srv = server(lambda req: Respond(status=404))
    assert run(srv.url(), concurrency=1, max_requests=5)["failed"] == 0
    report = run(srv.url(), concurrency=1, max_requests=5, fail_on_4xx=True)
    assert report["failed_by_kind"] == {"http_4xx": 5}


def test_timeout_counted(server):
    srv = server(lambda req: Hang())
    started = time.monotonic()
    report = run(srv.url(), concurrency=1, max_requests=2, timeout=0.3)
    assert time.monotonic() - started < 2
    assert report["failed"] == 2 and report["failed_by_kind"] == {"timeout": 2}
    assert report["retries"] == 0


def test_unexpected_client_exception_is_recorded_not_fatal(server):
    srv = server()
    gen = LoadGenerator(srv.url(), concurrency=1, max_requests=3)

    def broken_exchange(conn, deadline):
        raise RuntimeError("parser bug")

    gen.client.exchange = broken_exchange
    with gen:
        assert gen.wait(10)
    report = gen.report()
    assert report["total"] == 3 and report["failed_by_kind"] == {"client_error": 3}
    assert "parser bug" in report["failure_samples"][0]["error"]


def test_connection_refused_counted_as_connect_error():
    report = run(f"http://127.0.0.1:{free_port()}/", concurrency=2, max_requests=6)
    assert report["failed"] == 6 and report["failed_by_kind"] == {"connect_error": 6}
    assert report["retries"] == 0


# -- keep-alive race and the retry rule --------------------------------------------


def _serve_one_then_drop(req):
    """First request on a connection is served; the next one is read and the connection closed silently."""
    return Respond() if req.conn_request == 0 else Close()


def test_keepalive_race_is_retried_once_and_succeeds(server):
    srv = server(_serve_one_then_drop)
    gen = LoadGenerator(srv.url(), concurrency=1, max_requests=20)
    with gen:
        assert gen.wait(20)
    report = gen.report()
    assert report["failed"] == 0 and report["ok"] == 20
    assert report["retries"] == 19 and report["retried_ok"] == 19
    assert srv.connections == 20
    retried = [rec for rec in gen.records if rec.retried]
    assert all(not rec.reused and "before any response byte" in rec.retry_error for rec in retried)


def test_keepalive_race_without_retry_is_a_failure(server):
    srv = server(_serve_one_then_drop)
    report = run(srv.url(), concurrency=1, max_requests=20, retry=False)
    assert report["retries"] == 0
    assert report["failed"] == 10 and report["failed_by_kind"] == {"reset": 10}
    assert all(sample["reused"] for sample in report["failure_samples"])


def test_idle_keepalive_close_by_server_is_detected_before_reuse(server):
    srv = server(idle_timeout=0.03)  # server closes idle keep-alive connections after 30 ms
    report = run(srv.url(), concurrency=1, rate=5, max_requests=4)  # 200 ms between requests
    assert report["failed"] == 0 and report["ok"] == 4
    # the close is seen before anything is sent: a reconnect, not a retry (no request was lost)
    assert report["retries"] == 0 and report["stale_reconnects"] == 3 and report["reused"] == 0
    assert srv.connections == 4


def test_idle_keepalive_close_without_retry_still_succeeds(server):
    srv = server(idle_timeout=0.03)
    report = run(srv.url(), concurrency=1, rate=5, max_requests=4, retry=False)
    assert report["failed"] == 0 and report["stale_reconnects"] == 3


def test_non_idempotent_not_retried_unless_allowed(server):
    srv = server(_serve_one_then_drop)
    assert run(srv.url(), method="POST", concurrency=1, max_requests=4)["failed"] == 2
    report = run(srv.url(), method="POST", concurrency=1, max_requests=4, retry_non_idempotent=True)
    assert report["failed"] == 0 and report["retries"] == 3


def test_reset_after_partial_response_is_a_failure_not_retried(server):
    partial = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"
    srv = server(lambda req: Respond() if req.conn_request == 0 else Reset(partial=partial, delay=0.15))
    report = run(srv.url(), concurrency=1, max_requests=6)
    assert report["retries"] == 0
    assert report["ok"] == 3 and report["failed"] == 3
    assert report["failed_by_kind"] == {"reset": 3}
    assert all(sample["reused"] for sample in report["failure_samples"])


def test_failure_on_fresh_connection_is_not_retried(server):
    srv = server(lambda req: Close())
    report = run(srv.url(), concurrency=1, max_requests=3)
    assert report["failed"] == 3 and report["failed_by_kind"] == {"reset": 3}
    assert report["retries"] == 0
    assert srv.connections == 3
    assert not any(sample["reused"] for sample in report["failure_samples"])


def test_retry_that_fails_again_counts_once_as_failure(server):
    srv = server(lambda req: Respond() if req.index == 0 else Close())
    report = run(srv.url(), concurrency=1, max_requests=2)
    assert report["ok"] == 1 and report["failed"] == 1 and report["retries"] == 1 and report["retried_ok"] == 0
    sample = report["failure_samples"][0]
    assert sample["retried"] and not sample["reused"] and sample["error_kind"] == "reset"


# -- rollout-style use: marks and windows ---------------------------------------------


def test_marks_slice_a_version_switch(server):
    srv = server()
    with LoadGenerator(srv.url(), concurrency=4, rate=300, duration=10) as gen:
        time.sleep(0.4)
        gen.mark("switch")
        # A request started just before the mark may be answered after the switch:
        # leave a margin on both sides so the slices are unambiguous.
        time.sleep(0.1)
        srv.version = "v2"
        time.sleep(0.1)
        gen.mark("settled")
        time.sleep(0.4)
    report = gen.report()
    assert report["failed"] == 0 and set(report["versions"]) == {"v1", "v2"}
    assert set(report["marks"]) == {"switch", "settled"}
    before = gen.report(end="switch")
    after = gen.report(start="settled")
    assert set(before["versions"]) == {"v1"} and set(after["versions"]) == {"v2"}
    assert before["total"] + after["total"] + len(gen.records_between("switch", "settled")) == report["total"]
    spans = report["version_spans"]
    assert spans["v1"][1] < spans["v2"][1]


# -- safety ------------------------------------------------------------------------


def _fake_getaddrinfo(real):
    table = {"evil.example.test": ["203.0.113.9"], "mixed.example.test": ["127.0.0.1", "198.51.100.1"], "app.local.test": ["127.0.1.5"]}

    def fake(host, port, *args, **kwargs):
        if host in table:
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (addr, port)) for addr in table[host]]
        return real(host, port, *args, **kwargs)

    return fake


@pytest.mark.parametrize("url", [
    "http://10.1.2.3/", "http://192.0.2.1:8080/", "https://192.0.2.1/", "http://0.0.0.0:80/", "http://[2001:db8::1]/",
    "http://[::ffff:10.0.0.1]/", "http://evil.example.test/", "http://mixed.example.test/", "ftp://127.0.0.1/", "http:///nohost",
])
def test_non_loopback_targets_refused_before_any_connection(url, monkeypatch, connect_guard):
    monkeypatch.setattr(socket, "getaddrinfo", _fake_getaddrinfo(socket.getaddrinfo))
    with pytest.raises(UnsafeTargetError, match="refusing"):
        LoadGenerator(url, max_requests=1)
    with pytest.raises(ValueError):
        run(url, max_requests=1)
    assert cli_main([url, "-n", "1", "-q"]) == 2
    assert connect_guard == []


def test_loopback_targets_accepted(monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", _fake_getaddrinfo(socket.getaddrinfo))
    for url in ("http://localhost:8080/", "http://127.0.1.5/", "https://127.255.255.254:8443/", "http://[::1]:9/", "http://app.local.test/"):
        target = loadgen.parse_target(url)
        assert target.sockaddrs and all(loadgen.is_loopback_ip(sockaddr[0]) for _family, sockaddr in target.sockaddrs)


def test_alternative_loopback_address_end_to_end(server):
    srv = server(host="127.0.1.5")
    report = run(f"http://127.0.1.5:{srv.port}/", concurrency=2, max_requests=20)
    assert report["ok"] == 20
    srv_localhost = server()
    assert run(f"http://localhost:{srv_localhost.port}/", concurrency=1, max_requests=5)["ok"] == 5


def test_unsafe_cli_exit_code_in_subprocess():
    result = run_cli("http://192.0.2.1/", "-n", "1")
    assert result.returncode == 2
    assert "refusing" in result.stderr and "loopback" in result.stderr


# -- HTTPS -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_cert(tmp_path_factory):
    """Self-signed cert for localhost / 127.0.0.1 / app.test made with the openssl CLI."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,DNS:app.test,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


def _tls_server(server, tls_cert):
    import ssl
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*[str(path) for path in tls_cert])
    return server(ssl_context=context)


def test_https_with_cafile_and_keepalive(server, tls_cert):
    srv = _tls_server(server, tls_cert)
    report = run(srv.url(), concurrency=2, max_requests=40, cafile=str(tls_cert[0]))
    assert report["ok"] == 40 and report["failed"] == 0
    assert srv.connections == 2
    assert report["versions"] == {"v1": 40}


def test_https_sni_and_host_override(server, tls_cert):
    srv = _tls_server(server, tls_cert)
    report = run(srv.url(), concurrency=1, max_requests=3, cafile=str(tls_cert[0]), sni="app.test")
    assert report["ok"] == 3
    assert srv.sni_names == ["app.test"]
    assert srv.seen[0].headers["host"] == f"app.test:{srv.port}"


def test_https_insecure_and_unverified(server, tls_cert):
    srv = _tls_server(server, tls_cert)
    assert run(srv.url(), concurrency=1, max_requests=3, insecure=True)["ok"] == 3
    report = run(srv.url(), concurrency=1, max_requests=3)
    assert report["failed"] == 3 and report["retries"] == 0
    assert set(report["failed_by_kind"]) <= {"tls", "connect_error"}
    assert "certificate" in report["failure_samples"][0]["error"].lower()


def test_https_keepalive_race_retried(server, tls_cert):
    import ssl
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*[str(path) for path in tls_cert])
    srv = server(_serve_one_then_drop, ssl_context=context)
    report = run(srv.url(), concurrency=1, max_requests=6, cafile=str(tls_cert[0]))
    assert report["failed"] == 0 and report["retries"] == 5


# -- CLI -------------------------------------------------------------------------


def test_cli_success_writes_json_and_records(server, tmp_path):
    srv = server()
    json_out, records_out = tmp_path / "report.json", tmp_path / "records.jsonl"
    result = run_cli(srv.url(), "-n", "50", "-c", "2", "--json-out", str(json_out), "--records-out", str(records_out))
    assert result.returncode == 0, result.stderr
    assert "total" in result.stdout and "ok 50" in result.stdout
    report = json.loads(json_out.read_text())
    assert report["total"] == 50 and report["ok"] == 50 and report["failed"] == 0
    assert report["versions"] == {"v1": 50} and report["options"]["concurrency"] == 2
    records = loadgen.read_records_jsonl(records_out)
    assert len(records) == 50 and all(rec.status == 200 for rec in records)
    assert compute_report(records)["ok"] == 50


def test_cli_failures_exit_1_unless_within_max_failed(server, tmp_path, capsys):
    srv = server(lambda req: Respond(status=502))
    json_out = tmp_path / "r.json"
    assert cli_main([srv.url(), "-n", "10", "-c", "1", "--json-out", str(json_out)]) == 1
    assert json.loads(json_out.read_text())["failed_by_kind"] == {"http_5xx": 10}
    assert "http_5xx=10" in capsys.readouterr().out
    assert cli_main([srv.url(), "-n", "10", "-c", "1", "--max-failed", "10", "-q"]) == 0


def test_cli_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as excinfo:
        cli_main(["http://127.0.0.1:9/", "--concurrency", "abc"])
    assert excinfo.value.code == 2
    assert cli_main(["http://127.0.0.1:9/", "--duration", "601"]) == 2
    assert cli_main(["http://127.0.0.1:9/", "--cafile", "/nonexistent.pem"]) == 2
    assert "duration" in capsys.readouterr().err


# -- pure report / slicing logic ------------------------------------------------------


def _synthetic_records():
    records = []
    for i in range(100):  # ok requests, latency 1..100 ms, one every 10 ms, v1 then v2
        records.append(Record(index=i, start=i * 0.01, wall=1000.0 + i * 0.01, latency_ms=float(i + 1), ok=True, status=200,
                              version="v1" if i < 60 else "v2", reused=i > 0))
    records.append(Record(index=100, start=1.0, wall=1001.0, latency_ms=5000.0, ok=False, error_kind="timeout", error="timed out"))
    records.append(Record(index=101, start=1.1, wall=1001.1, latency_ms=2.0, ok=False, status=502, error_kind="http_5xx", error="HTTP 502"))
    records.append(Record(index=102, start=1.2, wall=1001.2, latency_ms=3.0, ok=True, status=200, retried=True, retry_error="reset: x"))
    return records


def test_compute_report_on_synthetic_records():
    report = compute_report(_synthetic_records(), max_samples=1)
    assert report["total"] == 103 and report["ok"] == 101 and report["failed"] == 2
    assert report["failed_by_kind"] == {"http_5xx": 1, "timeout": 1}
    assert report["retries"] == 1 and report["retried_ok"] == 1
    assert report["status_counts"] == {"200": 101, "502": 1}
    assert report["versions"] == {"v1": 60, "v2": 40}
    assert report["versions_missing"] == 2  # the 502 and the retried record carry no version
    assert report["version_spans"] == {"v1": [0.0, 0.59], "v2": [0.6, 0.99]}
    lat = report["latency_ms"]  # over ok records only: 1..100 plus 3.0
    assert (lat["p50"], lat["p90"], lat["p99"], lat["max"], lat["min"]) == (50.0, 90.0, 99.0, 100.0, 1.0)
    assert report["duration_s"] == pytest.approx(6.0)  # 0 .. timeout record end (1.0 + 5 s)
    assert report["achieved_rps"] == pytest.approx(103 / 6.0, abs=0.1)
    assert len(report["failure_samples"]) == 1 and report["failure_samples"][0]["error_kind"] == "timeout"
    assert report["reused"] == 99
    empty = compute_report([])
    assert empty["total"] == 0 and empty["latency_ms"]["p50"] is None and empty["achieved_rps"] == 0.0


def test_slice_records_by_offset_and_wall():
    records = _synthetic_records()
    assert len(slice_records(records, 0.0, 0.6)) == 60
    assert len(slice_records(records, 0.6)) == 43
    assert len(slice_records(records, None, 0.1)) == 10
    assert [rec.index for rec in slice_records(records, 1001.0, 1001.15, clock="wall")] == [100, 101]
    assert compute_report(slice_records(records, 0.6, 1.0))["versions"] == {"v2": 40}
    with pytest.raises(ValueError):
        slice_records(records, clock="bogus")
    assert Record.from_dict(records[5].to_dict()) == records[5]
