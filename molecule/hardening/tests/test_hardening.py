"""The hardening role on nodes with their own network namespaces (see ../molecule.yml).

Real traffic between the nodes of the private network 10.231.7.0/24: each
check connects from one node to another with ``podman exec <node> python3``
(or the node's own ssh/curl clients). Tests run in file order; the firewall
playbook runs and the fail2ban bans come last and undo what they change.
"""

import json
import os
import pathlib
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from scenario import EPHEMERAL, podman_exec, recap, run_playbook, wait_for  # pylint: disable=import-error

pytestmark = pytest.mark.skipif(not EPHEMERAL.is_dir(), reason="needs the molecule scenario's converge")

LB, APP, DATA, BACKUP, NET = ("nodeops-mol-hardening-%s" % n for n in ("lb1", "app1", "data1", "backup1", "net"))
ADDRESS = {LB: "10.231.7.10", APP: "10.231.7.11", DATA: "10.231.7.20", BACKUP: "10.231.7.30", NET: "10.231.7.200"}
HARDENED = (LB, APP, DATA, BACKUP)
TABLE = "nodeops_firewall"
FIREWALL_PLAYBOOK = pathlib.Path(__file__).resolve().parents[1] / "playbooks" / "firewall.yml"
LOG_DIR = pathlib.Path(os.environ.get("HARDENING_RESULTS_DIR", "/tmp/nodeops-molecule-hardening"))
SSH = ("ssh -i /root/.ssh/test_key -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
       "-o ConnectTimeout=4")

# One python3 per source node; all its connection attempts run at once.
PROBE = r"""
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor
targets, timeout = json.loads(sys.argv[1]), float(sys.argv[2])
def one(target):
    s = socket.socket()
    s.settimeout(timeout)
    try:
        s.connect((target[0], target[1]))
        return "open"
    except socket.timeout:
        return "timeout"
    except ConnectionRefusedError:
        return "refused"
    except OSError as exc:
        return "error %s" % exc.errno
    finally:
        s.close()
with ThreadPoolExecutor(len(targets)) as pool:
    print(json.dumps(list(pool.map(one, targets))))
"""


def probe(source, targets, timeout=2.0):
    """{(address, port): open|timeout|refused|error N} for TCP connects from ``source``."""
    out = podman_exec(source, "python3 -c '%s' '%s' %s" % (PROBE.replace("'", "'\"'\"'"), json.dumps(targets), timeout), timeout=60)
    return dict(zip([tuple(t) for t in targets], json.loads(out)))


def probe_many(plan, timeout=2.0):
    """Run ``probe`` for every source of ``plan`` ({source: [(address, port)]}) side by side."""
    with ThreadPoolExecutor(len(plan)) as pool:
        results = dict(zip(plan, pool.map(lambda s: probe(s, plan[s], timeout), plan)))
    return {(s, a, p): r for s, res in results.items() for (a, p), r in res.items()}


def ruleset(node):
    return podman_exec(node, "nft list ruleset")


def firewall_run(label, *extra, limit=LB):
    rc, out, secs = run_playbook(str(FIREWALL_PLAYBOOK), "--limit", limit, *extra, log=LOG_DIR / ("%s.log" % label), timeout=300)
    return rc, out + "\n" + " ".join(out.split()), secs


def extra_vars(**values):
    return ["-e", json.dumps(values)]


# ----------------------------------------------------------------------------- the tier matrix

def expected(source, target, port):
    """What the inventory's rules allow (None: not probed)."""
    src = ADDRESS[source]
    if port == 22:
        return "open" if src in ("10.231.7.10", "10.231.7.11", "10.231.7.20", "10.231.7.30") else "timeout"
    if target == LB and port in (80, 443):
        return "open"
    if target == APP and port == 3000:
        return "open" if source == LB else "timeout"
    if target == DATA and port == 6379:
        return "open" if source == APP else "timeout"
    if target == DATA and port == 27017:
        return "open" if source in (APP, BACKUP) else "timeout"
    # 8080 has a listener on every node and no rule: default deny. The others
    # have no listener; policy drop means they time out rather than refuse.
    return "timeout"


PORTS = (22, 80, 443, 3000, 6379, 27017, 8080)


def test_tier_matrix_with_real_connections():
    """Every (source node, target node, port) connects exactly when a rule derived from the groups allows it."""
    plan = {s: [(ADDRESS[t], p) for t in HARDENED if t != s for p in PORTS] for s in ADDRESS}
    results = probe_many(plan)
    wrong = []
    for (source, address, port), got in sorted(results.items()):
        target = next(n for n, a in ADDRESS.items() if a == address)
        want = expected(source, target, port)
        if got != want:
            wrong.append("%s -> %s:%s: %s, expected %s" % (source[19:], target[19:], port, got, want))
    assert not wrong, "\n".join(wrong)
    # Sanity of the matrix itself: both outcomes occur for the tier ports.
    assert results[(LB, ADDRESS[APP], 3000)] == "open" and results[(NET, ADDRESS[APP], 3000)] == "timeout"


def test_denied_listeners_run_and_answer_locally():
    """The 8080 listeners that time out from other nodes are up: each node reaches its own (loopback is allowed)."""
    for node in HARDENED:
        assert probe(node, [[ADDRESS[node], 8080], ["127.0.0.1", 8080]]) == {(ADDRESS[node], 8080): "open", ("127.0.0.1", 8080): "open"}


def test_request_through_the_load_balancer_reaches_the_app():
    """HTTPS from the outside node to nginx on lb1, proxied to app1:3000 (allowed from lb only), answers from app1."""
    out = podman_exec(NET, "curl -sk --max-time 10 --resolve hardening.lab.test:443:%s https://hardening.lab.test/" % ADDRESS[LB])
    assert out.strip() == APP


# ----------------------------------------------------------------------------- ruleset, boot, sysctls

def test_ruleset_is_in_place_and_persistent():
    for node in HARDENED:
        table = podman_exec(node, "nft list table inet %s" % TABLE)
        assert "policy drop" in table and "ct state established,related accept" in table
        assert podman_exec(node, "systemctl is-enabled nftables.service").strip() == "enabled"
        # The boot-time file is the confirmed one and the safety-net timer is gone.
        assert podman_exec(node, "cmp /var/lib/nodeops/hardening/firewall-candidate.nft /etc/nftables.d/%s.nft && echo same" % TABLE).strip() == "same"
        assert podman_exec(node, "systemctl is-active nodeops-firewall-rollback.timer", check=False).strip() != "active"
        assert podman_exec(node, "nft -c -f /etc/nftables.conf && echo ok").strip() == "ok"


def test_network_sysctls_applied_in_the_nodes_only():
    want = {"net.ipv4.conf.all.rp_filter": "1", "net.ipv4.tcp_syncookies": "1", "net.ipv4.conf.all.accept_redirects": "0",
            "net.ipv4.conf.all.send_redirects": "0", "net.ipv6.conf.all.accept_redirects": "0", "net.ipv4.conf.all.accept_source_route": "0"}
    for node in HARDENED:
        for key, value in want.items():
            assert podman_exec(node, "sysctl -n %s" % key).strip() == value, (node, key)
        # kernel.* is the host's: written for the next boot of a VM, never applied here.
        assert re.search(r"^kernel\.kptr_restrict\s*=\s*1$", podman_exec(node, "cat /etc/sysctl.d/60-nodeops-hardening-kernel.conf"), re.M)


def test_this_machines_network_namespace_is_untouched():
    before = (EPHEMERAL / "host-sysctls.txt").read_text()
    keys = [line.split(" = ")[0] for line in before.splitlines()]
    now = subprocess.run(["sysctl"] + keys, capture_output=True, text=True, check=True).stdout
    assert now.split() == before.split()
    host_rules = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, check=True).stdout
    assert TABLE not in host_rules and "f2b-table" not in host_rules
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert "br0" not in links and not re.search(r"\bsw[0-9]+@", links)


# ----------------------------------------------------------------------------- SSH

def test_sshd_config_passes_sshd_t_and_refuses_passwords_and_root():
    for node in HARDENED:
        podman_exec(node, "sshd -t")
        effective = podman_exec(node, "sshd -T")
        for line in ("passwordauthentication no", "kbdinteractiveauthentication no", "permitrootlogin no",
                     "authenticationmethods publickey", "allowusers deploy", "x11forwarding no"):
            assert line in effective, (node, line)


def ssh_from(source, target, user, options="", command="id -un"):
    proc = subprocess.run(["podman", "exec", source, "sh", "-c", "%s %s %s@%s %s" % (SSH, options, user, ADDRESS[target], command)],
                          capture_output=True, text=True, timeout=60, check=False)
    return proc.returncode, proc.stdout + proc.stderr, proc.stdout


def test_key_login_for_the_allowed_user_works():
    rc, out, stdout = ssh_from(APP, LB, "deploy")
    assert rc == 0 and stdout.strip() == "deploy", out


def test_password_login_is_refused():
    rc, out, _seconds = ssh_from(APP, LB, "deploy", "-o PubkeyAuthentication=no -o PreferredAuthentications=password,keyboard-interactive")
    assert rc == 255 and "Permission denied (publickey)" in out, out


def test_root_and_users_outside_allowusers_are_refused_even_with_a_valid_key():
    rc, out, _seconds = ssh_from(DATA, LB, "root")
    assert rc == 255 and "Permission denied" in out, out
    rc, out, _seconds = ssh_from(APP, LB, "intruder")
    assert rc == 255 and "Permission denied" in out, out


@pytest.mark.parametrize("option,message", [
    ("-o Ciphers=aes128-cbc", "no matching cipher"),
    ("-o MACs=hmac-sha1 -o Ciphers=aes128-ctr", "no matching MAC"),
    ("-o KexAlgorithms=diffie-hellman-group14-sha1", "no matching key exchange"),
])
def test_weak_algorithms_are_refused(option, message):
    rc, out, _seconds = ssh_from(DATA, APP, "deploy", option)
    assert rc == 255 and message in out, out


# ----------------------------------------------------------------------------- audit, upgrades

def test_audit_rules_watch_env_file_sudoers_and_sshd_config():
    rules = podman_exec(APP, "cat /etc/audit/rules.d/60-nodeops.rules")
    for line in ("-w /srv/shop/shared/app.env -p wa -k nodeops-app-env", "-w /etc/sudoers -p wa -k nodeops-sudoers",
                 "-w /etc/ssh/sshd_config -p wa -k nodeops-sshd"):
        assert line in rules
    # Only app nodes carry the app's env file watch; audit is masked where the kernel refuses it (containers).
    assert "app.env" not in podman_exec(LB, "cat /etc/audit/rules.d/60-nodeops.rules")
    assert podman_exec(APP, "systemctl is-enabled auditd.service", check=False).strip() == "masked"


def test_unattended_upgrades_take_security_updates_only():
    dump = podman_exec(DATA, "apt-config dump Unattended-Upgrade::Origins-Pattern")
    patterns = re.findall(r'Origins-Pattern:: "([^"]+)"', dump)
    assert patterns == ["origin=Debian,codename=${distro_codename}-security,label=Debian-Security"], dump
    for timer in ("apt-daily.timer", "apt-daily-upgrade.timer"):
        assert podman_exec(DATA, "systemctl is-enabled %s" % timer).strip() == "enabled"
    out = podman_exec(DATA, "unattended-upgrade --dry-run -d 2>&1", timeout=120)
    assert "Allowed origins are: origin=Debian,codename=bookworm-security,label=Debian-Security" in out, out[-2000:]


# ----------------------------------------------------------------------------- broken variables, rollback, check mode

def test_broken_rule_variable_fails_without_changing_the_live_ruleset():
    before = ruleset(LB)
    candidate = podman_exec(LB, "sha256sum /var/lib/nodeops/hardening/firewall-candidate.nft")
    broken = {
        "broken-address": extra_vars(hardening_firewall_extra_rules=[{"name": "metrics", "ports": [9100], "from": ["10.231.7.300"]}]),
        "broken-port": extra_vars(hardening_firewall_extra_rules=[{"name": "metrics", "ports": [70000]}]),
        "broken-raw": extra_vars(hardening_firewall_raw_rules=["tcp dport 9100 acept"]),
    }
    # Each run fails before anything is applied, so they can run side by side.
    with ThreadPoolExecutor(len(broken)) as pool:
        runs = dict(zip(broken, pool.map(lambda label: firewall_run(label, *broken[label]), broken)))
    rc, out, _seconds = runs["broken-address"]
    assert rc != 0 and "failed to validate" in out and "10.231.7.300" in out, out[-3000:]
    rc, out, _seconds = runs["broken-port"]
    assert rc != 0 and "metrics: port 70000 is not 1-65535" in out, out[-3000:]
    rc, out, _seconds = runs["broken-raw"]
    assert rc != 0 and "failed to validate" in out, out[-3000:]
    assert ruleset(LB) == before
    assert podman_exec(LB, "sha256sum /var/lib/nodeops/hardening/firewall-candidate.nft") == candidate


def test_check_mode_shows_a_change_and_applies_nothing():
    before = ruleset(LB)
    rc, out, _seconds = firewall_run("check-mode", "--check", "--diff", *extra_vars(hardening_firewall_extra_rules=[
        {"name": "metrics", "ports": [9100], "from_groups": ["backup"]}]))
    assert rc == 0, out[-3000:]
    assert "would apply the ruleset" in out and "tcp dport 9100 ip saddr { 10.231.7.30 } accept" in out, out[-3000:]
    assert recap(out)[LB]["changed"] > 0
    assert ruleset(LB) == before


# The window must outlast the failed run and the checks below on a loaded controller.
LOCKOUT = {"hardening_ssh_allow_from": ["10.231.7.11/32"], "hardening_firewall_confirm_timeout": 3,
           "hardening_firewall_rollback_seconds": 25}


def test_unconfirmed_ruleset_is_restored_by_the_timer():
    """Lock the confirming node (backup1) out of lb1's SSH: nothing confirms, the timer puts the old table back."""
    before = ruleset(LB)
    rc, out, _seconds = firewall_run("lockout-timer", *extra_vars(hardening_firewall_rollback_on_failure=False, **LOCKOUT))
    assert rc != 0 and "was not confirmed" in out and "comes back within 25 s" in out, out[-3000:]
    # Right after the failed run the new table is live and the rollback is pending...
    assert ruleset(LB) != before
    assert podman_exec(LB, "systemctl is-active nodeops-firewall-rollback.timer", check=False).strip() == "active"
    assert probe(BACKUP, [[ADDRESS[LB], 22]])[(ADDRESS[LB], 22)] == "timeout"
    # ...until the timer restores it, with no help from the controller.
    assert wait_for(lambda: ruleset(LB) == before, timeout=40, interval=1), ruleset(LB)
    assert probe(BACKUP, [[ADDRESS[LB], 22]])[(ADDRESS[LB], 22)] == "open"
    # The boot-time ruleset never was the unconfirmed one.
    assert "10.231.7.11" not in podman_exec(LB, "grep 'dport 22' /etc/nftables.d/%s.nft" % TABLE)


def test_unconfirmed_ruleset_is_restored_at_once_by_default():
    before = ruleset(LB)
    rc, out, _seconds = firewall_run("lockout-immediate", *extra_vars(**LOCKOUT))
    assert rc != 0 and "was not confirmed" in out and "was restored" in out, out[-3000:]
    assert ruleset(LB) == before
    assert podman_exec(LB, "systemctl is-active nodeops-firewall-rollback.timer", check=False).strip() != "active"


def test_normal_run_after_the_failures_changes_no_live_rule():
    before = ruleset(LB)
    rc, out, _seconds = firewall_run("restore")
    assert rc == 0, out[-3000:]
    assert "applying the ruleset" not in out
    rc, out, _seconds = firewall_run("restore-again")
    assert rc == 0 and recap(out)[LB]["changed"] == 0, out[-3000:]
    assert ruleset(LB) == before


# ----------------------------------------------------------------------------- fail2ban (last: bans)

def f2b_banned(node, jail):
    out = podman_exec(node, "fail2ban-client status %s" % jail)
    return re.search(r"Banned IP list:\s*(.*)", out).group(1).split()


def test_fail2ban_bans_repeated_failed_ssh_logins():
    assert ADDRESS[BACKUP] not in f2b_banned(LB, "sshd")
    try:
        for attempt in range(12):
            ssh_from(BACKUP, LB, "nosuchuser%d" % attempt)
            if ADDRESS[BACKUP] in f2b_banned(LB, "sshd"):
                break
        assert wait_for(lambda: ADDRESS[BACKUP] in f2b_banned(LB, "sshd"), timeout=10), podman_exec(LB, "fail2ban-client status sshd")
        res = probe(BACKUP, [[ADDRESS[LB], 22], [ADDRESS[LB], 443]])
        assert res[(ADDRESS[LB], 22)] in ("refused", "timeout", "error 113") and res[(ADDRESS[LB], 443)] == "open", res
        assert probe(APP, [[ADDRESS[LB], 22]])[(ADDRESS[LB], 22)] == "open"
    finally:
        podman_exec(LB, "fail2ban-client set sshd unbanip %s" % ADDRESS[BACKUP], check=False)
    assert probe(BACKUP, [[ADDRESS[LB], 22]])[(ADDRESS[LB], 22)] == "open"


def test_fail2ban_bans_a_4xx_flood_on_the_load_balancer():
    jail = "nodeops-nginx-4xx"
    flood = ("for i in $(seq 1 40); do curl -sk -o /dev/null --max-time 3 --resolve hardening.lab.test:443:%s "
             "https://hardening.lab.test/no-such-page-$i; done" % ADDRESS[LB])
    try:
        podman_exec(NET, flood, check=False, timeout=200)
        assert wait_for(lambda: ADDRESS[NET] in f2b_banned(LB, jail), timeout=15), podman_exec(LB, "fail2ban-client status %s" % jail)
        assert '"status":404' in podman_exec(LB, "tail -1 /var/log/nginx/access.log")
        res = probe(NET, [[ADDRESS[LB], 443], [ADDRESS[LB], 80]])
        assert set(res.values()) <= {"refused", "timeout", "error 113"}, res
        assert probe(APP, [[ADDRESS[LB], 443]])[(ADDRESS[LB], 443)] == "open"
    finally:
        podman_exec(LB, "fail2ban-client set %s unbanip %s" % (jail, ADDRESS[NET]), check=False)
    assert probe(NET, [[ADDRESS[LB], 443]])[(ADDRESS[LB], 443)] == "open"
