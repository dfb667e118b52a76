"""The backup role end to end on real lab nodes (see ../molecule.yml).

Runs from the controller, which shares the nodes' network namespace: pymongo and
redis-py talk to the data node's MongoDB test server and Redis directly, the
app's HTTP endpoint is probed directly, and commands run through ``podman exec``.
The tests run in file order; each builds on the state the previous one left.
"""

import hashlib
import http.server
import json
import os
import pathlib
import re
import subprocess
import threading
import time
import urllib.request

import pymongo
import pytest
import redis

from scenario import EPHEMERAL, INVENTORY, ROOT, playbook_env  # pylint: disable=import-error

LOG_DIR = pathlib.Path(os.environ.get("BACKUP_RESULTS_DIR", "/tmp/nodeops-molecule-backup"))

APP = "nodeops-mol-backup-app"
DATA = "nodeops-mol-backup-data"
OFFSITE = "nodeops-mol-backup-offsite"
OFFSITE_DIR = "/srv/nodeops-offsite"
APP_URL = "http://127.0.1.151:3000/health"
MONGO_URI = "mongodb://127.0.1.152:27017/?directConnection=true"
REDIS_PASSWORD = "lab-only-backup-redis-pass-0123"
WEBHOOK_ADDRESS = "127.0.1.159"
UPLOADS = "/srv/shop/shared/uploads"
SETS = "/var/backups/nodeops/sets"
STATE = "/var/lib/nodeops/backup"
RUNNER = "/usr/local/sbin/nodeops-backup"
INSTALL_DIR = "/opt/nodeops-backup"

pytestmark = pytest.mark.skipif(not EPHEMERAL.is_dir(), reason="needs the molecule scenario's converge")

ORDERS = [{"_id": i, "sku": "sku-%03d" % (i % 37), "qty": i % 7, "price": i * 1.25, "tags": ["a", "b"][: i % 3],
           "note": "order %d" % i} for i in range(500)]
USERS = [{"email": "user%d@example.test" % i, "name": "User %d" % i} for i in range(20)]
UPLOAD_FILES = {"invoice-1.txt": b"invoice one\n" * 100, "img/photo.bin": bytes(range(256)) * 256}


# ----------------------------------------------------------------------------- helpers

def podman(container, command, check=True, timeout=300):
    proc = subprocess.run(["podman", "exec", container, "sh", "-c", command], capture_output=True, text=True, env=playbook_env(),
                          timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError("%s: %s failed (%s): %s %s" % (container, command, proc.returncode, proc.stdout, proc.stderr))
    return proc


def read_json(container, path):
    return json.loads(podman(container, "cat %s" % path).stdout)


def run_playbook(label, playbook, *extra):
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / ("%s.log" % label)
    proc = subprocess.run([str(ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", INVENTORY, str(playbook)] + list(extra),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=playbook_env(), cwd=str(ROOT), timeout=900, check=False)
    out = proc.stdout.decode("utf-8", "replace")
    log.write_text(out)
    # messages are matched with white space folded: the YAML result format wraps long lines
    return proc.returncode, out + "\n" + " ".join(out.split())


def recap(output):
    hosts = {}
    for line in output.splitlines():
        m = re.match(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", line)
        if m:
            hosts[m.group(1)] = {"ok": int(m.group(2)), "changed": int(m.group(3)), "failed": int(m.group(5))}
    return hosts


def mongo():
    return pymongo.MongoClient(MONGO_URI, serverSelectionTimeoutMS=5000)


def rds():
    return redis.Redis(host="127.0.1.152", port=6379, password=REDIS_PASSWORD, socket_timeout=5)


def app_health():
    with urllib.request.urlopen(APP_URL, timeout=5) as resp:
        return resp.status


def uploads_on_app():
    """{relative path: sha256} of the uploads directory on the app node."""
    out = podman(APP, "cd %s && find . -type f -exec sha256sum {} +" % UPLOADS).stdout
    return {line.split()[1][2:]: line.split()[0] for line in out.splitlines() if line.strip()}


def start_service(unit):
    return podman(DATA, "systemctl start %s" % unit, check=False, timeout=600)


# ----------------------------------------------------------------------------- seed

@pytest.fixture(scope="module", autouse=True)
def seeded():
    client = mongo()
    client.drop_database("shop")
    client.shop.orders.insert_many(ORDERS)
    client.shop.users.insert_many(USERS)
    client.shop.users.create_index("email", unique=True)
    client.close()
    r = rds()
    for i in range(50):
        r.set("session:%d" % i, "user-%d" % i)
    r.close()
    for rel, data in UPLOAD_FILES.items():
        path = "%s/%s" % (UPLOADS, rel)
        subprocess.run(["podman", "exec", "-i", APP, "sh", "-c", "mkdir -p $(dirname %s) && cat > %s && chown -R shop:shop %s"
                        % (path, path, UPLOADS)], input=data, env=playbook_env(), check=True, timeout=60)
    return {rel: hashlib.sha256(data).hexdigest() for rel, data in UPLOAD_FILES.items()}


# ----------------------------------------------------------------------------- tests

def tree_sha256(container, path):
    """{relative path: sha256} of every file under path on a node."""
    out = podman(container, "cd %s && find . -type f -exec sha256sum {} +" % path).stdout
    return {line.split()[1][2:]: line.split()[0] for line in out.splitlines() if line.strip()}


def podman_script(container, script):
    """Run a bash script (given on stdin) in a node."""
    proc = subprocess.run(["podman", "exec", "-i", container, "bash", "-s"], input=script, capture_output=True, text=True,
                          env=playbook_env(), timeout=120, check=False)
    assert proc.returncode == 0, "%s: script failed (%s): %s %s" % (container, proc.returncode, proc.stdout, proc.stderr)
    return proc.stdout


# Off-site retention: two old sets of the same day (only the newer can fill any period's slot, so the older must go),
# a directory that is not a set and a dot directory (neither may be touched).
OFFSITE_SEED = """set -e
for n in 20200101T010000Z 20200101T020000Z; do
  mkdir -p %(d)s/$n && echo '{}' > %(d)s/$n/set.json && touch -d "2020-01-01 ${n:9:2}:00 UTC" %(d)s/$n
done
mkdir -p %(d)s/notes %(d)s/.keep && echo x > %(d)s/notes/readme && chown -R nodeops-offsite: %(d)s
""" % {"d": OFFSITE_DIR}


def test_1_timer_service_takes_one_verified_set_with_all_parts(seeded):
    timer = podman(DATA, "systemctl show nodeops-backup.timer -p TimersCalendar -p UnitFileState").stdout
    assert "02:00:00" in timer and "UnitFileState=enabled" in timer, timer
    podman_script(OFFSITE, OFFSITE_SEED)
    start = time.time()
    proc = start_service("nodeops-backup.service")
    assert proc.returncode == 0, proc.stderr + podman(DATA, "journalctl -u nodeops-backup.service -n 30 --no-pager").stdout
    last = read_json(DATA, STATE + "/last-run.json")
    assert last["result"] == "success" and last["verified"] is True and last["error"] is None, last
    assert isinstance(last["started_at"], int) and last["started_at"] <= last["finished_at"] <= time.time() + 1
    assert last["started_at"] >= int(start) - 1 and last["size_bytes"] > 0
    name = last["backup"]
    assert podman(DATA, "readlink %s/latest" % SETS).stdout.strip() == name

    manifest = read_json(DATA, "%s/%s/set.json" % (SETS, name))
    assert manifest["verified"] is True and set(manifest["parts"]) == {"mongo", "redis", "uploads"}, manifest
    mongo_part = manifest["parts"]["mongo"]
    assert mongo_part["collections"]["shop.orders"]["documents"] == len(ORDERS)
    assert mongo_part["collections"]["shop.users"]["documents"] == len(USERS)
    assert manifest["parts"]["uploads"]["files"] == len(UPLOAD_FILES)
    listing = podman(DATA, "tar -tzf %s/%s/uploads/uploads.tar.gz" % (SETS, name)).stdout.split()
    assert sorted(listing) == sorted(list(UPLOAD_FILES) + ["img/"]), listing
    assert podman(DATA, "head -c 5 %s/%s/redis/dump.rdb" % (SETS, name)).stdout == "REDIS"
    assert podman(DATA, "ls %s/%s/mongo/%s/shop" % (SETS, name, name)).stdout.split() == [
        "orders.bson.zst", "orders.metadata.json", "users.bson.zst", "users.metadata.json"]  # compression: zstd
    podman(DATA, "%s/venv/bin/python -c 'import zstandard'" % INSTALL_DIR)  # fails the test unless the role installed it

    # written by the backup user, private
    stat = podman(DATA, "stat -c '%%U %%a' %s/%s /var/backups/nodeops %s %s/last-run.json" % (SETS, name, STATE, STATE)).stdout.split("\n")
    assert stat[0] == "nodeops-backup 700" and stat[1] == "nodeops-backup 700" and stat[2] == "nodeops-backup 700", stat
    assert json.loads(podman(DATA, "%s verify --set %s" % (RUNNER, name)).stdout)["ok"] is True
    # the off-site copy went over SSH to the off-site node: every file identical, and the checksums of set.json hold there
    local, remote = tree_sha256(DATA, "%s/%s" % (SETS, name)), tree_sha256(OFFSITE, "%s/%s" % (OFFSITE_DIR, name))
    assert remote == local and len(remote) > 8, (sorted(local), sorted(remote))
    assert read_json(OFFSITE, "%s/%s/set.json" % (OFFSITE_DIR, name)) == manifest
    for key in ("redis", "uploads"):
        assert remote[manifest["parts"][key]["file"]] == manifest["parts"][key]["sha256"], key
    assert remote["mongo/%s/manifest.json" % name] == mongo_part["manifest_sha256"]
    assert last["offsite"]["target"] == "nodeops-offsite@127.0.1.153:/" and last["offsite"]["result"] == "success", last
    assert podman(OFFSITE, "stat -c '%%U %%a' %s %s/%s" % (OFFSITE_DIR, OFFSITE_DIR, name)).stdout.split("\n")[0] == "nodeops-offsite 700"
    # off-site retention: the policy pruned the older set of the same day there, and touched nothing that is not a set
    assert last["offsite"]["retention"]["pruned"] == ["20200101T010000Z"], last["offsite"]
    assert podman(OFFSITE, "ls -A %s" % OFFSITE_DIR).stdout.split() == [".keep", "20200101T020000Z", name, "notes"]
    # the key is pinned to that directory: no shell on the off-site host
    shell = podman(DATA, "runuser -u nodeops-backup -- ssh -p 2222 -i /var/lib/nodeops-backup/.ssh/id_ed25519 -o BatchMode=yes "
                         "-o UserKnownHostsFile=/var/lib/nodeops-backup/.ssh/known_hosts nodeops-offsite@127.0.1.153 id", check=False)
    assert shell.returncode != 0 and "uid=" not in shell.stdout, shell.stdout + shell.stderr


def test_2_weekly_restore_test_restores_into_scratch_and_compares():
    timer = podman(DATA, "systemctl show nodeops-backup-restore-test.timer -p TimersCalendar -p UnitFileState").stdout
    assert "Sun" in timer and "04:00:00" in timer and "UnitFileState=enabled" in timer, timer
    proc = start_service("nodeops-backup-restore-test.service")
    assert proc.returncode == 0, proc.stderr + podman(DATA, "journalctl -u nodeops-backup-restore-test.service -n 30 --no-pager").stdout
    record = read_json(DATA, STATE + "/restore-test.json")
    assert record["result"] == "success", record
    assert record["collections"]["shop.orders"] == {"documents": len(ORDERS), "expected_documents": len(ORDERS), "digest_match": True}
    assert record["collections"]["shop.users"]["digest_match"] is True
    client = mongo()
    assert not [d for d in client.list_database_names() if d.startswith("nodeops_restoretest_")]
    client.close()


def test_3_a_damaged_set_is_detected_and_never_restored():
    name = read_json(DATA, STATE + "/last-run.json")["backup"]
    podman(DATA, "cp -a %s/%s %s/damaged-copy && printf X | dd of=%s/damaged-copy/uploads/uploads.tar.gz bs=1 seek=100 conv=notrunc"
           % (SETS, name, SETS, SETS))
    try:
        out = podman(DATA, "%s verify --set damaged-copy" % RUNNER, check=False)
        assert out.returncode == 1
        assert "uploads: uploads/uploads.tar.gz sha256 does not match" in out.stdout, out.stdout
        rc, log = run_playbook("restore-damaged", ROOT / "playbooks" / "restore.yml", "-e", "restore_confirm=yes-restore-lab",
                               "-e", "backup_restore_set=damaged-copy")
        assert rc != 0 and "restore refused: backup set 'damaged-copy'" in log, log[-3000:]
        assert all(h["changed"] == 0 for h in recap(log).values()), recap(log)
    finally:
        podman(DATA, "rm -rf %s/damaged-copy" % SETS)


class _Hook(http.server.BaseHTTPRequestHandler):
    received = []

    def do_POST(self):  # noqa: N802  pylint: disable=invalid-name
        self.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):  # pylint: disable=arguments-differ
        pass


def test_4_a_failed_run_exits_non_zero_records_failure_and_calls_the_webhook():
    server = http.server.HTTPServer((WEBHOOK_ADDRESS, 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        config = read_json(DATA, "/etc/nodeops-backup/config.json")
        config["mongo"]["uri"] = "mongodb://127.0.1.152:1/?directConnection=true"  # nothing listens there
        config["mongo"]["connect_timeout"] = 2
        config["webhook"]["url"] = "http://%s:%d/hook" % (WEBHOOK_ADDRESS, server.server_port)
        subprocess.run(["podman", "exec", "-i", DATA, "sh", "-c", "cat > /etc/nodeops-backup/broken.json && "
                        "chgrp nodeops-backup /etc/nodeops-backup/broken.json && chmod 640 /etc/nodeops-backup/broken.json"],
                       input=json.dumps(config).encode(), env=playbook_env(), check=True, timeout=60)
        sets_before = podman(DATA, "ls -A %s" % SETS).stdout.split()
        proc = podman(DATA, "runuser -u nodeops-backup -- %s --config /etc/nodeops-backup/broken.json run" % RUNNER, check=False)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        last = read_json(DATA, STATE + "/last-run.json")
        assert last["result"] == "failed" and last["verified"] is False and "cannot reach MongoDB" in last["error"], last
        assert last["finished_at"] >= last["started_at"]
        assert podman(DATA, "ls -A %s" % SETS).stdout.split() == sets_before  # no partial set left behind
        assert len(_Hook.received) == 1 and _Hook.received[0]["record"]["result"] == "failed", _Hook.received
        assert REDIS_PASSWORD not in json.dumps(_Hook.received) + json.dumps(last)
    finally:
        server.shutdown()
        podman(DATA, "rm -f /etc/nodeops-backup/broken.json")
    # the next scheduled run succeeds again and says so
    assert start_service("nodeops-backup.service").returncode == 0
    assert read_json(DATA, STATE + "/last-run.json")["result"] == "success"


FRESHNESS_PLAY = """
- hosts: app
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: nodeops.stack.backup
        tasks_from: freshness
"""


def test_5_backup_playbook_then_freshness_entry_point(tmp_path):
    before = read_json(DATA, STATE + "/last-run.json")["backup"]
    rc, log = run_playbook("backup-playbook", ROOT / "playbooks" / "backup.yml")
    assert rc == 0 and "taken and verified" in log, log[-3000:]
    assert read_json(DATA, STATE + "/last-run.json")["backup"] != before

    play = tmp_path / "freshness.yml"
    play.write_text(FRESHNESS_PLAY)
    rc, log = run_playbook("freshness-ok", play, "-e", "backup_freshness_max_age_hours=1")
    assert rc == 0, log[-3000:]
    time.sleep(4)
    rc, log = run_playbook("freshness-stale", play, "-e", "backup_freshness_max_age_hours=0.0008")
    assert rc != 0 and "expected one younger than backup_freshness_max_age_hours=0.0008" in log, log[-3000:]
    # no verified set at all (sets moved aside): refused without take, taken with take_if_stale
    podman(DATA, "mkdir -p /var/backups/nodeops/held && mv %s/2* /var/backups/nodeops/held/ && rm -f %s/latest" % (SETS, SETS))
    try:
        rc, log = run_playbook("freshness-none", play, "-e", "backup_freshness_max_age_hours=1")
        assert rc != 0 and "is none (no hours old); expected one younger than backup_freshness_max_age_hours=1" in log, log[-3000:]
        rc, log = run_playbook("freshness-take", play, "-e", "backup_freshness_max_age_hours=1", "-e", "backup_freshness_take_if_stale=true")
        assert rc == 0 and "hours old (limit 1)" in log, log[-3000:]
        assert podman(DATA, "ls %s" % SETS).stdout.split() == [read_json(DATA, STATE + "/last-run.json")["backup"], "latest"]
    finally:
        podman(DATA, "rm -rf /var/backups/nodeops/held")


def test_6_restore_without_confirmation_refuses_and_changes_nothing():
    client = mongo()
    before = client.shop.orders.count_documents({})
    rc, log = run_playbook("restore-unconfirmed", ROOT / "playbooks" / "restore.yml")
    assert rc != 0
    assert "restore refused, nothing was changed" in log and "yes-restore-lab" in log, log[-3000:]
    assert all(h["changed"] == 0 for h in recap(log).values()), recap(log)
    assert "Stop the app" not in log
    assert client.shop.orders.count_documents({}) == before
    assert app_health() == 200
    client.close()


def test_7_restore_after_damage_brings_data_uploads_and_app_back(seeded):
    client = mongo()
    client.shop.orders.drop()
    client.shop.users.delete_many({"email": {"$in": ["user1@example.test", "user2@example.test"]}})
    podman(APP, "rm -f %s/invoice-1.txt" % UPLOADS)
    r = rds()
    r.delete(*["session:%d" % i for i in range(10)])
    assert client.shop.orders.count_documents({}) == 0 and r.get("session:1") is None

    rc, log = run_playbook("restore", ROOT / "playbooks" / "restore.yml", "-e", "restore_confirm=yes-restore-lab")
    assert rc == 0, log[-4000:]
    assert list(client.shop.orders.find().sort("_id", 1)) == ORDERS
    assert client.shop.users.count_documents({}) == len(USERS)
    assert any(ix.get("unique") for ix in client.shop.users.list_indexes() if ix["name"] != "_id_")
    assert uploads_on_app() == seeded
    assert podman(APP, "stat -c %%U %s/invoice-1.txt" % UPLOADS).stdout.strip() == "shop"
    assert rds().get("session:1") == b"user-1"
    assert app_health() == 200
    status = json.loads(podman(APP, "runuser -u shop -- env PM2_HOME=/home/shop/.pm2 pm2 jlist").stdout)
    apps = sorted((p["name"], p["pm2_env"]["status"]) for p in status if p["name"].startswith("shop-"))
    assert apps == [("shop-api", "online"), ("shop-worker", "online")], apps
    client.close()


ROLE_PLAY = """
- hosts: backup
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: nodeops.stack.backup
      vars: %s
"""


def test_8_encrypted_sets_hold_no_plaintext_and_restore_yml_restores_them_with_the_key(seeded, tmp_path):
    # The key pair is made on the app node; only the public key goes to the backup host (as role variable).
    keygen = podman(APP, "age-keygen").stdout
    public = re.search(r"^# public key: (age1\w+)$", keygen, re.M).group(1)
    identity = tmp_path / "backup.agekey"
    identity.write_text(keygen)
    identity.chmod(0o600)
    plain_name = read_json(DATA, STATE + "/last-run.json")["backup"]
    # what the plaintext check looks for is there in a plaintext set (redis keys are stored uncompressed)
    assert podman(DATA, "grep -rla 'session:1' %s/%s" % (SETS, plain_name)).stdout.strip() == "%s/%s/redis/dump.rdb" % (SETS, plain_name)

    play = tmp_path / "encrypt.yml"
    play.write_text(ROLE_PLAY % json.dumps({"backup_encryption_enabled": True, "backup_encryption_recipients": [public],
                                            "backup_restore_test_enabled": False}))
    rc, log = run_playbook("encrypt-role", play)
    assert rc == 0, log[-3000:]
    assert "UnitFileState=disabled" in podman(DATA, "systemctl show nodeops-backup-restore-test.timer -p UnitFileState").stdout
    assert podman(DATA, "grep -rl AGE-SECRET-KEY /etc/nodeops-backup /var/lib/nodeops-backup /var/backups/nodeops", check=False).returncode == 1

    assert start_service("nodeops-backup.service").returncode == 0
    last = read_json(DATA, STATE + "/last-run.json")
    name = last["backup"]
    assert last["result"] == "success" and last["verified"] is True and name != plain_name, last
    manifest = read_json(DATA, "%s/%s/set.json" % (SETS, name))
    assert manifest["encryption"] == {"method": "age", "recipients": [public]}, manifest.get("encryption")
    files = tree_sha256(DATA, "%s/%s" % (SETS, name))
    assert sorted(files) == ["mongo/%s.tar.age" % name, "redis/dump.rdb.age", "set.json", "set.json.sha256", "uploads/uploads.tar.gz.age"]
    for part in manifest["parts"].values():  # the manifest holds the ciphertext's sha256
        assert files[part["file"]] == part["sha256"], part
    heads = podman(DATA, "cd %s/%s && for f in */*.age; do head -c 21 $f; echo; done" % (SETS, name)).stdout.split()
    assert heads == ["age-encryption.org/v1"] * 3, heads
    # no plaintext at rest: not in the set, not in its off-site copy, and no staging copy of the uploads is kept
    for container, path in ((DATA, "%s/%s" % (SETS, name)), (OFFSITE, "%s/%s" % (OFFSITE_DIR, name))):
        for needle in ("session:1", "REDIS00", "order 1", "invoice one", "user1@example.test"):
            assert podman(container, "grep -rla '%s' %s" % (needle, path), check=False).returncode == 1, (container, needle)
    assert tree_sha256(OFFSITE, "%s/%s" % (OFFSITE_DIR, name)) == files
    assert podman(DATA, "test -e /var/backups/nodeops/.staging", check=False).returncode == 1
    assert json.loads(podman(DATA, "%s verify --set %s" % (RUNNER, name)).stdout)["ok"] is True

    client = mongo()
    client.shop.orders.delete_many({"_id": {"$lt": 100}})
    podman(APP, "rm -f %s/img/photo.bin" % UPLOADS)
    r = rds()
    r.delete(*["session:%d" % i for i in range(20, 30)])
    r.close()

    # without the key the restore is refused before anything changes
    rc, log = run_playbook("restore-encrypted-nokey", ROOT / "playbooks" / "restore.yml", "-e", "restore_confirm=yes-restore-lab")
    assert rc != 0 and "is encrypted with age (recipients %s)" % public in log, log[-3000:]
    assert all(h["changed"] == 0 for h in recap(log).values()), recap(log)
    assert client.shop.orders.count_documents({}) == len(ORDERS) - 100

    rc, log = run_playbook("restore-encrypted", ROOT / "playbooks" / "restore.yml", "-e", "restore_confirm=yes-restore-lab",
                           "-e", "backup_restore_identity_file=%s" % identity)
    assert rc == 0, log[-4000:]
    assert "AGE-SECRET-KEY" not in log
    assert list(client.shop.orders.find().sort("_id", 1)) == ORDERS
    assert uploads_on_app() == seeded
    r = rds()  # redis was restarted by the restore
    assert r.get("session:25") == b"user-25"
    assert app_health() == 200
    # the decrypted copies are gone again (backup host and controller), and the key never reached the backup host
    assert podman(DATA, "ls -A /var/backups/nodeops").stdout.split() == ["sets"]
    assert not (EPHEMERAL / "restore" / name).exists()
    assert podman(DATA, "grep -rl AGE-SECRET-KEY /etc /var/lib/nodeops /var/lib/nodeops-backup /var/backups /tmp /var/tmp /root",
                  check=False).returncode == 1
    client.close()
    r.close()


def unit_state(unit):
    return podman(DATA, "systemctl is-enabled %s; systemctl is-active %s" % (unit, unit), check=False).stdout.split()


def test_9_cron_fallback_takes_the_set_from_cron_and_switching_back_restores_the_timers(tmp_path):
    play = tmp_path / "scheduler.yml"
    play.write_text(ROLE_PLAY % json.dumps({"backup_scheduler": "cron", "backup_cron_minute": "*", "backup_cron_hour": "*"}))
    before = read_json(DATA, STATE + "/last-run.json")["backup"]
    since = int(time.time())
    rc, log = run_playbook("scheduler-cron", play)
    assert rc == 0, log[-3000:]
    assert unit_state("nodeops-backup.timer") == ["disabled", "inactive"]
    assert unit_state("nodeops-backup-restore-test.timer") == ["disabled", "inactive"]
    assert unit_state("cron") == ["enabled", "active"]
    entries = [line for line in podman(DATA, "cat /etc/cron.d/nodeops-backup").stdout.splitlines() if line and not line.startswith("#")]
    assert "* * * * * nodeops-backup %s run >/dev/null" % RUNNER in entries, entries
    assert "0 4 * * 0 nodeops-backup %s restore-test >/dev/null" % RUNNER in entries, entries

    # cron itself starts the run (every minute here): a new verified set, written with the timer's private modes
    deadline = time.time() + 180
    while True:
        last = read_json(DATA, STATE + "/last-run.json")
        if last["backup"] != before and last["started_at"] >= since:
            break
        assert time.time() < deadline, "cron did not take a set within 180 s: %s" % last
        time.sleep(5)
    assert last["result"] == "success" and last["verified"] is True, last
    assert "(nodeops-backup) CMD (%s run" % RUNNER in podman(DATA, "journalctl --no-pager --since @%d" % since).stdout
    modes = podman(DATA, "find %s/%s -type f -exec stat -c '%%a %%n' {} +" % (SETS, last["backup"])).stdout.split("\n")
    assert all(line.startswith("600 ") for line in modes if line), modes

    play.write_text(ROLE_PLAY % json.dumps({"backup_scheduler": "systemd"}))
    rc, log = run_playbook("scheduler-systemd", play)
    assert rc == 0, log[-3000:]
    assert podman(DATA, "test -e /etc/cron.d/nodeops-backup", check=False).returncode == 1
    assert unit_state("nodeops-backup.timer") == ["enabled", "active"]
    assert unit_state("nodeops-backup-restore-test.timer") == ["enabled", "active"]
    # leave no run behind that cron started before its entry went
    deadline = time.time() + 300
    while podman(DATA, "pgrep -f '[n]odeops-backup run'", check=False).returncode == 0:  # [n]: never matches this shell
        assert time.time() < deadline, "a cron-started run is still going after 300 s"
        time.sleep(3)
