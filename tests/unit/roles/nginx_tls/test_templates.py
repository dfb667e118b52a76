"""nginx_tls templates, checked without a lab node.

The role's templates are rendered with Jinja2 plus the few Ansible filters and
tests they use, for option combinations the molecule scenario does not cover
(HTTP/2 directive and session tickets on newer nginx, OCSP, real IP, rate limit off,
least_conn, IPv6 listeners, ...). Where an nginx binary is installed, every
rendered configuration must pass ``nginx -t`` (which parses and checks the
configuration only: it opens no listening socket). The upstream target
resolution is tested too (staging and validation: tests/unit/plugins/module_utils/test_nginx_config.py).
"""

import copy
import json
import os
import re
import shutil
import subprocess

import jinja2
import pytest
import yaml
from ansible.plugins.filter.core import FilterModule
from ansible.plugins.test.core import TestModule as AnsibleTests  # not a pytest class

ROLE = os.path.join(os.path.dirname(__file__), *([os.pardir] * 4), "roles", "nginx_tls")
ROLE = os.path.abspath(ROLE)
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
needs_nginx = pytest.mark.skipif(NGINX is None or os.geteuid() != 0, reason="needs an nginx binary and root (nginx -t)")


def _nginx_version():
    if NGINX is None:
        return None
    out = subprocess.run([NGINX, "-v"], capture_output=True, text=True, check=False).stderr
    return tuple(int(x) for x in out.strip().rsplit("/", 1)[-1].split(".")[:3])


NGINX_VERSION = _nginx_version()

_FILTERS = FilterModule().filters()
_TESTS = AnsibleTests().tests()


def environment():
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(os.path.join(ROLE, "templates")), trim_blocks=True,
                             undefined=jinja2.StrictUndefined)
    for name in ("to_json", "to_nice_json", "bool", "regex_replace", "regex_escape", "quote", "from_json", "combine"):
        env.filters[name] = _FILTERS[name]
    for name in ("version", "match", "search"):
        env.tests[name] = _TESTS[name]
    return env


def role_vars(tmp_path, **overrides):
    """Role defaults + vars with the controller-side values a run would compute."""
    data = {}
    for name in ("defaults", "vars"):
        with open(os.path.join(ROLE, name, "main.yml")) as fh:
            data.update(yaml.safe_load(fh))
    cert, key = make_cert(tmp_path)
    data.update({
        "inventory_hostname": "lb1",
        "nginx_tls_server_names": ["shop.example.test"],
        "nginx_tls_listen_addresses": ["127.0.0.1"],
        "nginx_tls_cert_path": cert,
        "nginx_tls_key_path": key,
        "nginx_tls_access_log": str(tmp_path / "access.log"),
        "nginx_tls_error_log": str(tmp_path / "error.log"),
        "__nginx_tls_user": "www-data" if _user_exists("www-data") else "nobody",
        "__nginx_tls_nginx_version": "1.22.1",
        "__nginx_tls_maintenance_enabled": False,
        "__nginx_tls_upstream_spec": {
            "name": "app", "method": "round_robin", "keepalive": 32, "keepalive_timeout": "60s", "keepalive_requests": 1000,
            "servers": [
                {"name": "app1", "address": "10.0.0.11", "port": 3000, "weight": 1, "max_fails": 3, "fail_timeout": "10s",
                 "backup": False, "state": "enabled"},
                {"name": "app2", "address": "10.0.0.12", "port": 3000, "weight": 2, "max_fails": 3, "fail_timeout": "10s",
                 "backup": False, "state": "drained"},
            ],
        },
    })
    data.update(overrides)
    # Resolve the remaining "{{ ... }}" defaults against the values above.
    env = environment()
    for depth in range(3):
        for k, v in list(data.items()):
            if isinstance(v, str) and "{{" in v:
                data[k] = env.from_string(v).render(**data)
    return data


def _user_exists(name):
    import pwd
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def make_cert(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    if not cert.exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                        "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=shop.example.test"],
                       check=True, capture_output=True)
    return str(cert), str(key)


def render_config(tmp_path, variables):
    """Render every configuration file into tmp_path/conf, as the role lays it out."""
    conf = tmp_path / "conf"
    (conf / "nodeops" / "state").mkdir(parents=True, exist_ok=True)
    (conf / "nodeops" / "html").mkdir(parents=True, exist_ok=True)
    if os.path.exists("/etc/nginx/mime.types"):
        shutil.copy("/etc/nginx/mime.types", conf / "mime.types")
    else:
        (conf / "mime.types").write_text("types { text/html html; }\n")
    env = environment()
    files = variables["__nginx_tls_files_main"] + variables["__nginx_tls_files_upstream"] + variables["__nginx_tls_files_maintenance"]
    out = {}
    for item in files:
        dest = env.from_string(item["dest"]).render(**variables)
        text = env.get_template(item["src"]).render(**variables)
        (conf / dest).write_text(text)
        out[dest] = text
    return conf, out


def nginx_t(conf):
    return subprocess.run([NGINX, "-t", "-q", "-c", str(conf / "nginx.conf")], capture_output=True, text=True, check=False)


CASES = {
    "defaults": {},
    "newer_nginx_http2_directive_and_tickets": {"__nginx_tls_nginx_version": "1.27.3"},
    "everything_optional_on": {
        "nginx_tls_ocsp_stapling": True, "nginx_tls_ocsp_resolvers": ["127.0.0.53"], "nginx_tls_real_ip_from": ["10.0.0.0/8"],
        "nginx_tls_content_security_policy": "default-src 'self'", "nginx_tls_hsts_include_subdomains": True,
        "nginx_tls_hsts_preload": True, "nginx_tls_extra_headers": {"Permissions-Policy": "camera=()"},
        "nginx_tls_rate_limit_exempt": ["127.0.0.1", "10.1.0.0/16"], "nginx_tls_maintenance_allow": ["192.0.2.7"],
        "nginx_tls_worker_shutdown_timeout": "30s", "nginx_tls_worker_rlimit_nofile": 65536, "nginx_tls_session_tickets": True,
        "__nginx_tls_maintenance_enabled": True,
    },
    "everything_optional_off": {
        "nginx_tls_rate_limit_enabled": False, "nginx_tls_gzip_enabled": False, "nginx_tls_static_enabled": False,
        "nginx_tls_http_enabled": False, "nginx_tls_http2": False, "nginx_tls_hsts_enabled": False,
        "nginx_tls_frame_options": "", "nginx_tls_referrer_policy": "", "nginx_tls_upstream_keepalive": 0,
    },
    "ipv6_and_wildcard_listeners_other_ports": {
        "nginx_tls_listen_addresses": ["*", "::1"], "nginx_tls_http_port": 8080, "nginx_tls_https_port": 8443,
    },
    "stub_status": {
        "nginx_tls_stub_status_enabled": True, "nginx_tls_stub_status_listen": "127.0.0.1:8081",
        "nginx_tls_stub_status_allow": ["127.0.0.1", "10.0.5.0/24"],
    },
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_configuration(tmp_path, case):
    variables = role_vars(tmp_path, **copy.deepcopy(CASES[case]))
    conf, files = render_config(tmp_path, variables)
    site = files["nodeops/site.conf"]
    http = files["nodeops/http.conf"]
    if case == "defaults":
        assert "ssl_protocols TLSv1.2 TLSv1.3;" in http
        assert "ssl_session_tickets off;" in http  # detected nginx 1.22 < 1.23.2
        assert "listen 127.0.0.1:443 ssl http2;" in site
        assert "return 301 https://$host$request_uri;" in site
        assert "server 10.0.0.12:3000 weight=2 max_fails=3 fail_timeout=10s down;" in files["nodeops/upstream-app.conf"]
        assert "limit_req zone=nodeops_req burst=200 nodelay;" in site
    if case == "newer_nginx_http2_directive_and_tickets":
        assert "http2 on;" in site and "ssl http2" not in site
        assert "ssl_session_tickets" not in http  # nginx >= 1.23.2 rotates ticket keys
    if case == "everything_optional_off":
        assert "limit_req" not in site and "gzip on" not in http and ":80;" not in site and "Strict-Transport" not in site
    if case == "stub_status":
        status = site.split("# stub_status for the metrics exporter", 1)[1]
        assert "listen 127.0.0.1:8081;" in status and "access_log off;" in status
        assert re.search(r"location = /nginx_status \{\s+stub_status;\s+allow 127\.0\.0\.1;\s+allow 10\.0\.5\.0/24;\s+deny all;\s+\}",
                         status), status
        assert site.count("stub_status;") == 1
    else:
        assert "stub_status" not in site  # off by default
    if case == "ipv6_and_wildcard_listeners_other_ports":
        assert "listen [::1]:8443 ssl http2;" in site and "listen *:8080;" in site
        assert "return 301 https://$host:8443$request_uri;" in site
    rendered_for = tuple(int(x) for x in variables["__nginx_tls_nginx_version"].split("."))
    if NGINX and os.geteuid() == 0 and rendered_for <= NGINX_VERSION:  # a newer nginx's syntax cannot be checked here
        result = nginx_t(conf)
        assert result.returncode == 0, result.stderr


@needs_nginx
def test_invalid_value_is_caught_by_nginx_t(tmp_path):
    variables = role_vars(tmp_path, nginx_tls_client_max_body_size="10q")
    conf = render_config(tmp_path, variables)[0]
    result = nginx_t(conf)
    assert result.returncode != 0 and "client_max_body_size" in result.stderr


def spec_update(targets, state, servers):
    env = environment()
    variables = {"__nginx_tls_server_list": targets, "__nginx_tls_current_spec": {
        "name": "app", "method": "round_robin", "keepalive": 32, "keepalive_timeout": "60s", "keepalive_requests": 1000,
        "servers": servers}, "nginx_tls_server_state": state}
    resolved = json.loads(env.get_template("upstream_targets.json.j2").render(**variables))
    variables["__nginx_tls_targets"] = resolved
    return resolved, json.loads(env.get_template("upstream_spec_update.json.j2").render(**variables))


SERVERS = [
    {"name": "app1", "address": "10.0.0.11", "port": 3000, "state": "enabled"},
    {"name": "app2", "address": "10.0.0.12", "port": 3000, "state": "enabled"},
    {"name": "app2-b", "address": "10.0.0.12", "port": 3001, "state": "enabled"},
    {"name": "v6", "address": "fd00::5", "port": 3000, "state": "enabled"},
]


@pytest.mark.parametrize("target,key", [
    ("app1", "10.0.0.11:3000"), ("10.0.0.11:3000", "10.0.0.11:3000"), ("10.0.0.11", "10.0.0.11:3000"),
    ("10.0.0.12:3001", "10.0.0.12:3001"), ("[fd00::5]:3000", "fd00::5:3000"), ("fd00::5", "fd00::5:3000"),
])
def test_target_resolution(target, key):
    resolved, spec = spec_update([target], "drained", SERVERS)
    assert resolved[0]["matches"] == 1 and resolved[0]["key"] == key
    changed = [s for s in spec["servers"] if s["state"] == "drained"]
    assert ["%s:%s" % (s["address"], s["port"]) for s in changed] == [key]


@pytest.mark.parametrize("target,matches", [("10.0.0.12", 2), ("nope", 0), ("10.0.0.11:3001", 0)])
def test_ambiguous_or_unknown_targets_do_not_match_once(target, matches):
    resolved = spec_update([target], "down", SERVERS)[0]
    assert resolved[0]["matches"] == matches


def test_upstream_spec_keeps_recorded_states_and_defaults_new_servers(tmp_path):
    env = environment()
    variables = role_vars(tmp_path)
    variables.update({
        "groups": {"app": ["app1", "app2", "app3"]},
        "hostvars": {"app1": {"nodeops_node_address": "10.0.0.11"},
                     "app2": {"nodeops_node_address": "10.0.0.12", "nginx_tls_upstream_weight": 5},
                     "app3": {"ansible_host": "10.0.0.13", "nginx_tls_upstream_port": 4000}},
        "__nginx_tls_recorded_upstream": {"servers": [
            {"address": "10.0.0.12", "port": 3000, "state": "drained"},
            {"address": "10.0.0.99", "port": 3000, "state": "down"}]},
    })
    spec = json.loads(env.get_template("upstream_spec.json.j2").render(**variables))
    got = {s["name"]: (s["address"], s["port"], s["weight"], s["state"]) for s in spec["servers"]}
    assert got == {"app1": ("10.0.0.11", 3000, 1, "enabled"), "app2": ("10.0.0.12", 3000, 5, "drained"),
                   "app3": ("10.0.0.13", 4000, 1, "enabled")}
