"""nginx_tls on a real lab node, probed by real clients from the controller.

Tests run in file order; the stateful ones (maintenance, drain, broken config)
restore what they change.
"""

import concurrent.futures
import http.client
import json
import re
import subprocess
import threading
import time

import pytest
from loadgen import LoadGenerator
from nginx_lab import (APP_PORT, APPS, LB, LB_NAME, SNI, access_log, ansible_playbook, node, raw_upload, recap, record_tls,
                       request, s_client, tls_context, wait_for)

testinfra_hosts = [LB_NAME]

APP1, APP2 = sorted(APPS)
PROFILE_TLS12 = {
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
}


# ---------------------------------------------------------------- the node


def test_nginx_listens_only_on_the_node_address(host):
    listeners = host.check_output("ss -Htlnp | grep nginx || true")
    addresses = sorted(set(line.split()[3] for line in listeners.splitlines()))
    assert addresses == ["%s:443" % LB, "%s:80" % LB, "%s:8080" % LB], listeners


def plain_get(port, path, source=None):
    """One plain-HTTP GET to the load balancer's address (stub_status listener, redirect server)."""
    conn = http.client.HTTPConnection(LB, port, timeout=10, source_address=(source, 0) if source else None)
    try:
        conn.request("GET", path, headers={"Host": SNI})
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


def stub_status(source=None):
    """(status, {active, accepts, handled, requests}) from the stub_status listener."""
    status, body = plain_get(8080, "/nginx_status", source=source)
    m = re.search(r"^Active connections: (\d+)\s*\nserver accepts handled requests\n\s*(\d+) (\d+) (\d+)", body, re.M)
    return status, (dict(zip(("active", "accepts", "handled", "requests"), map(int, m.groups()))) if m else body)


def test_stub_status_answers_only_on_its_own_listener(lb, cafile):
    """stub_status on LB:8080 for allowed clients only; the site's ports never serve it; its requests are not logged."""
    since = time.time()
    status, first = stub_status()  # from 127.0.0.1 (the kernel's source for 127.0.1.x): allowed
    assert status == 200 and first["active"] >= 1, first
    status, second = stub_status()
    assert status == 200 and second["requests"] > first["requests"], (first, second)  # live counters
    assert stub_status(source="127.0.0.56")[0] == 403  # not in nginx_tls_stub_status_allow
    assert plain_get(8080, "/")[0] == 404
    over_https = request(cafile, "/nginx_status")  # the site proxies the path to the app like any other
    assert over_https.status == 404 and b"Active connections" not in over_https.body
    assert plain_get(80, "/nginx_status")[0] == 301
    # Only the site's two requests were logged (nginx writes each line when the request ends).
    logged = sorted((e["uri"], e["status"]) for e in access_log(lb, since=since) if e["uri"] in ("/", "/nginx_status"))
    assert logged == [("/nginx_status", 301), ("/nginx_status", 404)], logged


def test_live_configuration_is_valid_and_owned(host):
    assert host.run("nginx -t -q").rc == 0
    key = host.file("/etc/ssl/nodeops/private/nginx-tls.lab.test.key")
    assert key.user == "root" and key.mode == 0o600
    assert host.file("/etc/nginx/nodeops/state/upstream-app.json").exists
    # Nothing left over from staging, no lock held.
    assert host.check_output("ls -A /var/lib/nodeops-nginx") == ""
    assert not host.file("/run/nodeops-nginx-tls.lock").exists


def test_session_tickets_off_on_nginx_before_1_23_2(host):
    version = host.run("nginx -v").stderr
    assert "nginx/1.22" in version
    assert "ssl_session_tickets off;" in host.file("/etc/nginx/nodeops/http.conf").content_string


# ---------------------------------------------------------------- TLS profile


@pytest.mark.parametrize("flag,name", [("-ssl3", "SSLv3"), ("-tls1", "TLS 1.0"), ("-tls1_1", "TLS 1.1")])
def test_old_protocols_refused_by_the_server(flag, name):
    if flag == "-ssl3":
        # This OpenSSL is built without SSLv3 (s_client rejects the option): recorded, not a server check.
        result = s_client(flag, "-cipher", "DEFAULT@SECLEVEL=0")
        if result["alert"] is None:
            result["outcome"] = "client cannot offer it (OpenSSL built without SSLv3)"
        record_tls("%s handshake" % name, "refused", result)
        assert not result["established"]
        return
    # SECLEVEL=0 lets this client offer the old protocol, so a failure is nginx's refusal.
    result = s_client(flag, "-cipher", "DEFAULT@SECLEVEL=0")
    record_tls("%s handshake (client at SECLEVEL=0)" % name, "refused", result)
    assert not result["established"]
    assert result["alert"] == 70, result  # protocol_version, sent by the server


@pytest.mark.parametrize("flag,proto", [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")])
def test_current_protocols_accepted(flag, proto):
    result = s_client(flag)
    record_tls("%s handshake" % proto, "accepted", result)
    assert result["established"] and result["protocol"] == proto, result


@pytest.mark.parametrize("cipher", [
    "AES128-SHA", "AES256-SHA256", "AES128-GCM-SHA256", "ECDHE-RSA-AES128-SHA", "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA384", "ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES128-CCM", "DHE-RSA-AES128-GCM-SHA256",
    "DES-CBC3-SHA",
])
def test_out_of_profile_cipher_refused(cipher):
    result = s_client("-tls1_2", "-cipher", "%s:@SECLEVEL=0" % cipher)
    record_tls("TLS 1.2 cipher %s" % cipher, "refused", result)
    assert not result["established"], result
    if result["outcome"] != "client cannot offer it":
        assert result["alert"] == 40, result  # handshake_failure: no shared cipher


@pytest.mark.parametrize("cipher", ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305"])
def test_profile_ciphers_accepted(cipher):
    result = s_client("-tls1_2", "-cipher", cipher)
    record_tls("TLS 1.2 cipher %s" % cipher, "accepted", result)
    assert result["established"] and result["cipher"] == cipher, result


@pytest.mark.parametrize("suite", ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"])
def test_tls13_suites_accepted(suite):
    result = s_client("-tls1_3", "-ciphersuites", suite)
    record_tls("TLS 1.3 suite %s" % suite, "accepted", result)
    assert result["established"] and result["cipher"] == suite, result


def test_every_tls12_cipher_the_client_knows():
    """Offer each TLS 1.2 cipher this OpenSSL has (at SECLEVEL=0) on its own: only profile ciphers may succeed.

    TLS 1.3 suites and PSK/SRP ciphers (which need credentials no web client has) are left out.
    """
    names = subprocess.run(["openssl", "ciphers", "-tls1_2", "ALL:COMPLEMENTOFALL:@SECLEVEL=0"], capture_output=True, text=True,
                           check=True).stdout.strip().split(":")
    names = [n for n in names if not n.startswith("TLS_") and "PSK" not in n and "SRP" not in n]
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip(names, pool.map(lambda n: s_client("-tls1_2", "-cipher", "%s:@SECLEVEL=0" % n), names)))
    accepted = sorted(n for n, r in results.items() if r["established"])
    record_tls("TLS 1.2: all %d client ciphers offered one by one" % len(names), "profile",
               {"args": "", "established": False, "protocol": None, "cipher": None, "alert": None,
                "outcome": "accepted only %s" % ", ".join(accepted)})
    assert accepted, "no cipher accepted at all"
    assert set(accepted) <= PROFILE_TLS12, accepted


@pytest.mark.parametrize("flag,group,expected", [
    ("-tls1_2", "secp521r1", "refused"), ("-tls1_3", "secp521r1", "refused"), ("-tls1_3", "ffdhe2048", "refused"),
    ("-tls1_3", "X25519", "accepted"), ("-tls1_2", "prime256v1", "accepted"), ("-tls1_3", "secp384r1", "accepted"),
])
def test_key_exchange_groups(flag, group, expected):
    result = s_client(flag, "-groups", group)
    record_tls("%s group %s" % (flag.lstrip("-"), group), expected, result)
    assert result["established"] == (expected == "accepted"), result


def test_certificate_names_and_verification(cafile):
    resp = request(cafile, "/version")  # verified against the cert, by IP SAN
    assert resp.status == 200
    result = s_client("-tls1_3", "-CAfile", cafile, "-verify_hostname", SNI, "-verify_return_error")
    record_tls("certificate verifies for %s" % SNI, "accepted", result)
    assert result["established"], result


# ---------------------------------------------------------------- HTTP behaviour


def test_security_headers_on_every_https_answer(cafile):
    for path, status in (("/version", 200), ("/no-such-page", 404)):
        resp = request(cafile, path)
        assert resp.status == status
        assert resp.header("strict-transport-security") == "max-age=63072000"
        assert resp.header("x-content-type-options") == "nosniff"
        assert resp.header("x-frame-options") == "DENY"
        assert resp.header("referrer-policy") == "strict-origin-when-cross-origin"
        assert resp.header("content-security-policy") == "default-src 'self'"
        assert resp.header("server") == "nginx"  # server_tokens off: no version


def test_http_redirects_to_https_with_301(cafile):
    resp = request(cafile, "/health?x=1", scheme="http")
    assert resp.status == 301
    assert resp.header("location") == "https://%s/health?x=1" % SNI


def test_acme_challenge_path_not_redirected(lb, cafile):
    lb.run("echo token-content > /var/www/acme/.well-known/acme-challenge/molecule-token")
    try:
        resp = request(cafile, "/.well-known/acme-challenge/molecule-token", scheme="http")
        assert resp.status == 200 and resp.body == b"token-content\n"
        assert request(cafile, "/.well-known/acme-challenge/missing", scheme="http").status == 404
    finally:
        lb.run("rm -f /var/www/acme/.well-known/acme-challenge/molecule-token")


def test_request_id_generated_passed_through_forwarded_and_logged(lb, cafile):
    generated = request(cafile, "/version").header("x-request-id")
    assert re.fullmatch(r"[0-9a-f]{32}", generated), generated
    mine = "molecule-%d" % time.time_ns()
    resp = request(cafile, "/version", headers={"X-Request-ID": mine})
    assert resp.header("x-request-id") == mine  # returned once (the app's echo is hidden)
    server = resp.header("x-app-version")
    # forwarded upstream: the app that served it logged the same id
    app = node(server)
    assert wait_for(lambda: mine in app.check_output("journalctl -u nodeops-sample-app -o cat --no-pager | tail -n 50"))
    # and nginx logged it in the JSON access log with the upstream it used
    entry = [e for e in access_log(lb) if e["request_id"] == mine][-1]
    assert entry["status"] == 200 and entry["upstream_addr"] == "%s:%d" % (APPS[server], APP_PORT)
    assert set(entry) >= {"time", "remote_addr", "request_id", "method", "uri", "status", "bytes", "request_time",
                          "upstream_addr", "upstream_status", "upstream_response_time", "user_agent"}
    # a request id that could break log parsing is replaced
    assert request(cafile, "/version", headers={"X-Request-ID": "bad id\"x"}).header("x-request-id") != "bad id\"x"


def test_both_app_nodes_serve(cafile):
    seen = {request(cafile, "/version").header("x-app-version") for attempt in range(8)}
    assert seen == set(APPS)


def test_static_files_gzip_and_cache_headers(cafile):
    resp = request(cafile, "/static/hello.txt", headers={"Accept-Encoding": "gzip"})
    assert resp.status == 200
    assert resp.header("content-encoding") == "gzip"
    assert resp.header("cache-control") == "max-age=604800"
    assert resp.header("strict-transport-security")  # headers inherited by the static location


def test_upload_limit(cafile):
    small = request(cafile, "/echo", method="POST", body=b"x" * (9 * 1024 * 1024))
    assert small.status == 200 and small.json()["bytes"] == 9 * 1024 * 1024
    status = raw_upload(cafile, 10 * 1024 * 1024 + 1)[0]
    assert status == 413


def test_rate_limit_per_client_address(cafile):
    """600 requests at once from 127.0.0.55 (not exempt): past 100 r/s + 200 burst they get 429."""
    statuses = []
    lock = threading.Lock()

    def client():
        conn = http.client.HTTPSConnection(LB, 443, context=tls_context(cafile), timeout=15,
                                           source_address=("127.0.0.55", 0))
        try:
            for attempt in range(75):
                conn.request("GET", "/version", headers={"Host": SNI})
                resp = conn.getresponse()
                resp.read()
                with lock:
                    statuses.append((resp.status, resp.getheader("Strict-Transport-Security")))
        finally:
            conn.close()

    threads = [threading.Thread(target=client) for worker in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    codes = [status for status, hsts in statuses]
    assert len(codes) == 600
    assert set(codes) <= {200, 429}, set(codes)
    assert codes.count(429) > 0 and codes.count(200) >= 200, (codes.count(200), codes.count(429))
    assert all(h for s, h in statuses if s == 429)  # headers "always", also on 429
    # the exempt address (127.0.0.1) is not limited
    assert request(cafile, "/version").status == 200


# ---------------------------------------------------------------- drain under load


def test_drain_under_load_loses_nothing(lb, cafile):
    """Drain app1 while HTTPS keep-alive load runs through nginx and slow requests are in flight."""
    slow_results = []

    def slow(i):
        resp = request(cafile, "/slow?ms=3000", headers={"X-Request-ID": "molecule-slow-%d" % i}, timeout=30)
        slow_results.append((resp.status, resp.header("x-app-version"), time.time()))

    with LoadGenerator("https://%s/version" % LB, concurrency=4, rate=150, duration=400, cafile=cafile, sni=SNI) as gen:
        time.sleep(2)
        gen.mark("slow_start")
        # 12 slow requests: with round robin, some land on app1 (checked below).
        slows = [threading.Thread(target=slow, args=(i,)) for i in range(12)]
        for t in slows:
            t.start()
            time.sleep(0.02)
        time.sleep(0.5)
        gen.mark("drain_start")
        t_drain_start = time.time()
        proc = ansible_playbook("playbooks/upstream_state.yml", "--limit", APP1, "-e", "molecule_state=drained")
        t_drained = time.time()
        gen.mark("drained")
        time.sleep(3)
        report = gen.stop()
    for t in slows:
        t.join(30)

    assert proc.returncode == 0, proc.stdout[-4000:]
    assert report["stopped_by"] == "stop"
    assert report["failed"] == 0, report["failure_samples"]
    assert report["total"] >= 1000, report["total"]
    assert set(report["status_counts"]) == {"200"}, report["status_counts"]

    # every slow request completed with 200, including those on the drained node,
    # and the drain waited for them (it ended after they did)
    assert len(slow_results) == 12 and {status for status, server, end in slow_results} == {200}, slow_results
    on_app1 = [end for status, server, end in slow_results if server == APP1]
    assert on_app1, "no slow request landed on %s (round robin); rerun" % APP1
    assert max(on_app1) > t_drain_start and max(on_app1) <= t_drained + 0.5

    # no new request went to app1 once the drain returned
    after = [r for r in gen.records if r.wall > t_drained]
    assert len(after) >= 300 and {r.version for r in after} == {APP2}, {r.version for r in after}
    started_after = [e for e in access_log(lb, since=t_drained)
                     if e["msec"] - e["request_time"] > t_drained and "%s:%d" % (APPS[APP1], APP_PORT) in e["upstream_addr"]]
    assert started_after == []

    # nginx holds no connection to app1; the upstream says down; the state is recorded
    assert "server %s:%d" % (APPS[APP1], APP_PORT) in lb.file("/etc/nginx/nodeops/upstream-app.conf").content_string
    assert re.search(r"server %s:%d .* down;" % (re.escape(APPS[APP1]), APP_PORT), lb.file("/etc/nginx/nodeops/upstream-app.conf").content_string)
    state = json.loads(lb.file("/etc/nginx/nodeops/state/upstream-app.json").content_string)
    assert {s["name"]: s["state"] for s in state["servers"]} == {APP1: "drained", APP2: "enabled"}
    assert re.search(r'"connections": 0,', proc.stdout) and '"timed_out": true' not in proc.stdout, proc.stdout[-2000:]


def test_draining_the_last_server_is_refused(lb):
    proc = ansible_playbook("playbooks/upstream_state.yml", "--limit", APP2, "-e", "molecule_state=drained")
    assert proc.returncode != 0
    assert "without an enabled server" in proc.stdout
    state = json.loads(lb.file("/etc/nginx/nodeops/state/upstream-app.json").content_string)
    assert {s["name"]: s["state"] for s in state["servers"]} == {APP1: "drained", APP2: "enabled"}


# ---------------------------------------------------------------- maintenance + a full run keeps recorded state


def test_maintenance_mode_and_full_run_keeps_recorded_states(lb, cafile):
    pid = lb.file("/run/nginx.pid").content_string.strip()
    on = ansible_playbook("playbooks/maintenance.yml", "-e", '{"nginx_tls_maintenance": true}')
    assert on.returncode == 0, on.stdout[-3000:]
    try:
        blocked = request(cafile, "/version")
        assert blocked.status == 503
        assert blocked.header("retry-after") == "120"
        assert b"Down for maintenance" in blocked.body
        assert blocked.header("strict-transport-security")
        assert request(cafile, "/echo", method="POST", body=b"abc").status == 503  # not 405: any method
        allowed = request(cafile, "/version", source="127.0.0.77")
        assert allowed.status == 200 and allowed.header("x-app-version") == APP2  # app1 is still drained

        # A full role run with no maintenance/state variables keeps both recorded states and changes nothing.
        full = ansible_playbook("converge.yml")
        assert full.returncode == 0, full.stdout[-3000:]
        assert recap(full.stdout)["changed"] == 0, full.stdout[-3000:]
        assert request(cafile, "/version").status == 503
        assert re.search(r"server %s:%d .* down;" % (re.escape(APPS[APP1]), APP_PORT),
                         lb.file("/etc/nginx/nodeops/upstream-app.conf").content_string)
    finally:
        off = ansible_playbook("playbooks/maintenance.yml", "-e", '{"nginx_tls_maintenance": false}')
    assert off.returncode == 0, off.stdout[-3000:]
    assert request(cafile, "/version").status == 200
    assert lb.file("/run/nginx.pid").content_string.strip() == pid  # reloads only, never a restart


# ---------------------------------------------------------------- parallel calls, batch call


def test_parallel_calls_against_one_lb_never_lose_a_change_then_batch_call_enables(lb, cafile):
    # Both app hosts at once (the mistake a serial: 2 rolling update could make), each enabling itself (app1 is
    # drained). Each call reads the recorded state, then applies under the load balancer's lock only if that record
    # is unchanged: a call either lands on top of the other's change or is refused with a clear message (lock held,
    # or the record changed since it was read). A change is never silently lost, and no lock is left behind.
    proc = ansible_playbook("playbooks/upstream_state.yml", "-e", "molecule_state=enabled")
    refused = re.findall(r"^fatal: \[(\S+) -> %s\]: FAILED! => .*(?:Another nginx_tls run is changing nginx|changed since it was read)"
                         % LB_NAME, proc.stdout, re.M)
    assert len(refused) <= 1, proc.stdout[-4000:]
    assert proc.returncode == (2 if refused else 0), proc.stdout[-4000:]
    for host in (APP1, APP2):
        assert recap(proc.stdout, host=host)["failed"] == (1 if host in refused else 0), proc.stdout[-4000:]
    state = {s["name"]: s["state"] for s in json.loads(lb.file("/etc/nginx/nodeops/state/upstream-app.json").content_string)["servers"]}
    for host in [h for h in (APP1, APP2) if h not in refused]:
        assert state[host] == "enabled", (state, proc.stdout[-3000:])
    assert not lb.file("/run/nodeops-nginx-tls.lock").exists
    # The supported way: one call for the batch.
    batch = ansible_playbook("playbooks/upstream_batch.yml", "-e", "molecule_state=enabled")
    assert batch.returncode == 0, batch.stdout[-3000:]
    state = json.loads(lb.file("/etc/nginx/nodeops/state/upstream-app.json").content_string)
    assert {s["state"] for s in state["servers"]} == {"enabled"}
    assert " down;" not in lb.file("/etc/nginx/nodeops/upstream-app.conf").content_string
    assert wait_for(lambda: {request(cafile, "/version").header("x-app-version") for attempt in range(6)} == set(APPS))


# ---------------------------------------------------------------- a broken change never reaches the live config


def test_broken_variable_fails_the_play_and_nginx_keeps_serving(lb, cafile):
    pid = lb.file("/run/nginx.pid").content_string.strip()
    before = lb.check_output("cat /etc/nginx/nginx.conf /etc/nginx/nodeops/*.conf | sha256sum")
    proc = ansible_playbook("converge.yml", "-e", "nginx_tls_client_max_body_size=10q")
    assert proc.returncode != 0
    assert "nginx -t rejected the candidate configuration" in proc.stdout, proc.stdout[-3000:]
    assert "client_max_body_size" in proc.stdout
    assert lb.check_output("cat /etc/nginx/nginx.conf /etc/nginx/nodeops/*.conf | sha256sum") == before
    assert lb.file("/run/nginx.pid").content_string.strip() == pid
    assert lb.run("nginx -t -q").rc == 0
    assert lb.check_output("ls -A /var/lib/nodeops-nginx") == ""
    assert not lb.file("/run/nodeops-nginx-tls.lock").exists
    assert all(request(cafile, "/version").status == 200 for attempt in range(5))


# ---------------------------------------------------------------- certificate expiry check


def test_cert_check_warns_then_fails(lb):
    proc = ansible_playbook("playbooks/cert_check.yml")
    assert proc.returncode != 0
    assert "WARNING: /etc/ssl/nodeops/nginx-tls.lab.test.crt" in proc.stdout, proc.stdout[-3000:]
    assert "expire(s) in fewer than 400 days" in proc.stdout, proc.stdout[-3000:]
