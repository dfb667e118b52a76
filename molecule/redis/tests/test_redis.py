"""The redis role on a real lab node: Debian's redis-server 7 behind a password.

Clients run on the controller, which shares the node's network namespace. They
connect only to the node's own address (127.0.1.131) and, to show that nothing
listens there, to 127.0.0.1 on the scenario's port (6380) - never to 6379.
Secrets and ports come from the scenario's inventory (molecule.yml).
"""

import json
import os
import re
import socket
import subprocess
import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from scenario import wait_for  # pylint: disable=import-error

SCENARIO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROJECT_DIR = os.path.dirname(os.path.dirname(SCENARIO_DIR))
NODE = "nodeops-mol-redis-1"
UNIT = "redis-server"
CONF = "/etc/redis/redis.conf"
SECRETS = "/etc/redis/nodeops-secrets.conf"
MARKER = "/run/nodeops-redis-restart-pending"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


# ---------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def addr(hostvars):
    return hostvars["nodeops_node_address"], int(hostvars["redis_port"])


@pytest.fixture(scope="module")
def password(hostvars):
    return hostvars["redis_password"]


@pytest.fixture(scope="module")
def config_command(hostvars):
    """CONFIG is renamed in the lab (redis_rename_commands); this is its new name."""
    return hostvars["redis_rename_commands"]["CONFIG"]


def connect(addr, password=None, protocol=2):
    """A redis-py client that tries once (redis-py retries failed AUTH with backoff by default)."""
    return redis.Redis(host=addr[0], port=addr[1], password=password, protocol=protocol, socket_timeout=5,
                       retry=Retry(NoBackoff(), 0), decode_responses=True)


@pytest.fixture()
def client(addr, password):
    conn = connect(addr, password)
    yield conn
    conn.close()


def config_get(client, command, name):
    """CONFIG GET through the renamed command (redis-py then returns the raw [name, value] list)."""
    reply = client.execute_command(command, "GET", name)
    return dict(zip(reply[::2], reply[1::2]))[name]


def auth_error_code(exc):
    """NOAUTH / WRONGPASS from redis-py's AuthenticationError (redis-py 6+ keeps it in status_code)."""
    return getattr(exc, "status_code", None) or str(exc).split()[0]


def raw_command(addr, line):
    """One RESP inline command over a plain socket; the first reply line."""
    with socket.create_connection(addr, timeout=5) as sock:
        sock.sendall(line.encode() + b"\r\n")
        return sock.recv(4096).split(b"\r\n", 1)[0].decode()


def assert_secret_not_in(output, password):
    """The password, its JSON-escaped form and its first word never appear."""
    for form in (password, json.dumps(password)[1:-1], password.split()[0]):
        assert form not in output, "the password leaked into the output"


def main_pid(host):
    return int(host.check_output("systemctl show -p MainPID --value %s" % UNIT))


def live_files_digest(host):
    return host.check_output("cat %s %s /etc/systemd/system/redis-server.service.d/nodeops.conf | sha256sum" % (CONF, SECRETS))


def ansible_playbook(*args, timeout=300):
    """Run the scenario's converge playbook against its inventory, the way molecule does."""
    inventory = os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"])
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    env.setdefault("ANSIBLE_COLLECTIONS_PATH", os.path.join(PROJECT_DIR, ".cache", "collections"))
    proc = subprocess.run(["ansible-playbook", "-i", inventory, os.path.join(SCENARIO_DIR, "converge.yml"), *args],
                          capture_output=True, text=True, env=env, timeout=timeout, cwd=PROJECT_DIR, check=False)
    proc.stdout = ANSI.sub("", proc.stdout + "\n" + proc.stderr)
    return proc


def recap(output):
    m = re.search(r"^%s\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)" % re.escape(NODE), output, re.M)
    assert m, "no recap for %s in:\n%s" % (NODE, output[-3000:])
    return dict(zip(("ok", "changed", "unreachable", "failed"), map(int, m.groups())))


# ---------------------------------------------------------------- service and network


def test_service_enabled_and_active(host):
    svc = host.service(UNIT)
    assert svc.is_enabled
    assert svc.is_running


def test_package_default_instance_never_ran(host):
    """The unit was masked during the first install: no start ever used Debian's port 6379."""
    log = host.file("/var/log/redis/redis-server.log").content_string
    assert "port=6380" in log
    assert "port=6379" not in log


def test_listens_on_the_node_address_only(host, addr):
    listeners = set()
    for line in host.check_output("ss -Hltnp").splitlines():
        if '"redis-server"' in line:
            listeners.add(line.split()[3])
    assert listeners == {"%s:%d" % addr}
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", addr[1]), timeout=3).close()


# ---------------------------------------------------------------- authentication and configuration


def test_ping_without_password_gets_noauth(addr):
    assert raw_command(addr, "PING").startswith("-NOAUTH")
    with pytest.raises(redis.exceptions.AuthenticationError) as err:
        connect(addr).ping()
    assert auth_error_code(err.value) == "NOAUTH"


def test_wrong_password_refused(addr):
    assert raw_command(addr, "AUTH not-the-password").startswith("-WRONGPASS")
    with pytest.raises(redis.exceptions.AuthenticationError) as err:
        connect(addr, "not-the-password").ping()
    assert auth_error_code(err.value) == "WRONGPASS"


def test_ping_with_password_gets_pong(client, addr, password):
    assert client.ping() is True
    assert client.execute_command("ROLE")[0] == "master"
    # Also with RESP3 (redis-py's HELLO handshake) - the password survived quoting.
    with connect(addr, password, protocol=3) as resp3:
        assert resp3.ping() is True


@pytest.mark.parametrize("name,expected", [
    ("maxmemory", "268435456"),
    ("maxmemory-policy", "allkeys-lru"),
    ("save", "900 1 300 10 60 10000"),
    ("appendonly", "no"),
    ("protected-mode", "yes"),
    ("bind", "127.0.1.131"),
    ("port", "6380"),
    ("dir", "/var/lib/redis"),
    ("dbfilename", "dump.rdb"),
    ("disable-thp", "yes"),
])
def test_config_get(client, config_command, name, expected):
    assert config_get(client, config_command, name) == expected


def test_dangerous_commands_disabled_or_renamed(client, config_command):
    for command in ("FLUSHALL", "FLUSHDB", "CONFIG GET maxmemory"):
        with pytest.raises(redis.exceptions.ResponseError, match="unknown command"):
            client.execute_command(*command.split())
    assert config_get(client, config_command, "maxmemory-policy") == "allkeys-lru"


def test_files_modes_and_secrets_kept_apart(host, password):
    for path in (CONF, SECRETS):
        f = host.file(path)
        assert (f.user, f.group, f.mode) == ("redis", "redis", 0o640), path
    conf = host.file(CONF).content_string
    assert not re.search(r"^\s*requirepass", conf, re.M)
    assert password not in conf
    assert conf.rstrip().endswith("include %s" % SECRETS)
    secrets = host.file(SECRETS).content_string
    assert re.search(r'^requirepass "', secrets, re.M)


def test_checker_installed_and_rejects_a_bad_file(host):
    result = host.run("printf 'maxmemory-policy bogus\\n' > /tmp/bad.conf && /usr/local/sbin/nodeops-redis-check-config /tmp/bad.conf")
    assert result.rc == 1
    assert "FATAL CONFIG FILE ERROR" in result.stderr
    assert host.run("/usr/local/sbin/nodeops-redis-check-config %s" % CONF).rc == 0
    assert host.run("ls -d /tmp/nodeops-redis-check.*").rc != 0, "the checker left its scratch directory behind"


# ---------------------------------------------------------------- RDB snapshots


def test_bgsave_writes_the_rdb_and_lastsave_advances(host, client):
    before = client.lastsave()
    client.set("nodeops:molecule:bgsave", "1")
    # LASTSAVE has a resolution of one second.
    time.sleep(max(0.0, before.timestamp() + 1.1 - time.time()))
    try:
        client.bgsave()
    except redis.exceptions.ResponseError as exc:  # a save point may have just started one
        assert "in progress" in str(exc)
    assert wait_for(lambda: client.lastsave() > before), "LASTSAVE stayed at %s" % before
    assert client.info("persistence")["rdb_last_bgsave_status"] == "ok"
    rdb = host.file("/var/lib/redis/dump.rdb")
    assert rdb.exists and rdb.user == "redis"
    assert rdb.mtime.timestamp() >= before.timestamp()
    assert host.check_output("head -c 5 /var/lib/redis/dump.rdb") == "REDIS"


# ---------------------------------------------------------------- broken inputs never reach the running redis

BROKEN_RUNS = {
    "argument spec refuses the policy": (
        ["-e", "redis_maxmemory_policy=bogus"],
        ["redis_maxmemory_policy", "bogus"],
    ),
    "bind address not on the node": (
        ["-e", json.dumps({"redis_bind": ["192.0.2.10"]})],
        ["redis_bind has addresses that are not on %s: 192.0.2.10" % NODE],
    ),
    "production refuses a placeholder password": (
        ["-e", "redis_environment=production", "-e", "redis_password=change-me-now"],
        ["production refuses a redis_password that looks like a placeholder"],
    ),
}


@pytest.mark.parametrize("case", list(BROKEN_RUNS))
def test_broken_input_fails_the_play_and_redis_keeps_serving(host, client, config_command, case):
    extra, expected = BROKEN_RUNS[case]
    pid = main_pid(host)
    digest = live_files_digest(host)
    proc = ansible_playbook(*extra)
    assert proc.returncode != 0, proc.stdout[-3000:]
    for text in expected:
        assert text in proc.stdout, proc.stdout[-3000:]
    assert_secret_not_in(proc.stdout, "change-me-now")
    assert live_files_digest(host) == digest
    assert main_pid(host) == pid
    assert client.ping() is True
    assert config_get(client, config_command, "maxmemory-policy") == "allkeys-lru"


# ---------------------------------------------------------------- check mode, secrets in output, restarts
# The restart test flips maxmemory-samples (5 <-> 10) and leaves it so: it
# reads the live value, so verify can run again on the same node.


def test_check_mode_refuses_a_value_redis_would_refuse_and_changes_nothing(host, client, config_command, password):
    """--check skips Ansible's validate:, so the role checks a scratch copy itself; nothing else moves."""
    pid = main_pid(host)
    digest = live_files_digest(host)
    proc = ansible_playbook("--check", "--diff", "-v", "-e", json.dumps({"redis_config_extra": {"maxmemory-policy": "bogus"}}))
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert "Check both with redis-server" in proc.stdout
    assert "'maxmemory-policy bogus'" in proc.stdout, proc.stdout[-3000:]
    assert "+maxmemory-policy bogus" in proc.stdout  # the diff of the live file was shown, not applied
    assert_secret_not_in(proc.stdout, password)
    assert live_files_digest(host) == digest
    assert main_pid(host) == pid
    assert not host.file("/run/nodeops-redis-check").exists
    assert config_get(client, config_command, "maxmemory-policy") == "allkeys-lru"


def test_rejected_config_keeps_redis_on_the_old_one_and_leaves_a_restart_pending(host, client, config_command, addr):
    """A new password and a value only redis-server's parser can refuse, in one run.

    The secrets file passes its check and is written; redis.conf is refused and
    the play fails before its handlers. Redis keeps running what it ran (old
    password, old policy), and the marker makes the next run restart it.
    """
    new_password = "lab-only-next-redis-password"
    pid = main_pid(host)
    conf = host.check_output("sha256sum %s" % CONF)
    proc = ansible_playbook("-e", json.dumps({"redis_password": new_password, "redis_config_extra": {"maxmemory-policy": "bogus"}}))
    assert proc.returncode != 0, proc.stdout[-3000:]
    for text in ("redis-server rejected the candidate configuration", "FATAL CONFIG FILE ERROR", "'maxmemory-policy bogus'"):
        assert text in proc.stdout, proc.stdout[-3000:]
    assert_secret_not_in(proc.stdout, new_password)
    assert host.check_output("sha256sum %s" % CONF) == conf
    assert main_pid(host) == pid
    assert client.ping() is True
    assert config_get(client, config_command, "maxmemory-policy") == "allkeys-lru"
    with pytest.raises(redis.exceptions.AuthenticationError):
        connect(addr, new_password).ping()
    assert host.file(MARKER).exists


def test_changed_setting_restarts_redis_once_and_keeps_the_data(host, client, config_command, password):
    samples = "10" if config_get(client, config_command, "maxmemory-samples") == "5" else "5"
    client.set("nodeops:molecule:survives-restart", "yes")
    pid = main_pid(host)
    # After the test above the secrets file holds its password: this run puts the inventory's back.
    pending = host.file(MARKER).exists
    proc = ansible_playbook("--diff", "-v", "-e", "redis_maxmemory_samples=%s" % samples)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert proc.stdout.count("RUNNING HANDLER [nodeops.stack.redis : Restart redis-server]") == 1
    assert "+maxmemory-samples %s" % samples in proc.stdout  # redis.conf's diff (it holds no secret)
    # redis.conf and the restart, plus the secrets file when the test above left it changed
    assert recap(proc.stdout)["changed"] == (3 if pending else 2), proc.stdout[-3000:]
    assert not host.file(MARKER).exists
    assert_secret_not_in(proc.stdout, password)
    assert main_pid(host) not in (0, pid)
    assert config_get(client, config_command, "maxmemory-samples") == samples
    # Redis wrote an RDB on shutdown and loaded it on start.
    assert client.get("nodeops:molecule:survives-restart") == "yes"
