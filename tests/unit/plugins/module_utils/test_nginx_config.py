"""nginx_config: stage + nginx -t before anything live changes, compare-and-swap, the change lock,
worker replacement after a reload and the drain wait (the last two against a fake /proc and ss)."""

import os
import shutil
import subprocess

import pytest

from ansible_collections.nodeops.stack.plugins.module_utils.nginx_config import (
    HostLock, Nginx, NginxConfigError, apply_change, read_files, sha256_text)

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
needs_nginx = pytest.mark.skipif(NGINX is None or os.geteuid() != 0, reason="needs an nginx binary and root (nginx -t, chown)")


def run(argv):
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def live_tree(tmp_path):
    live = tmp_path / "live"
    (live / "nodeops" / "state").mkdir(parents=True)
    (live / "nginx.conf").write_text("events {}\nhttp { include nodeops/site.conf; }\n")
    (live / "nodeops" / "site.conf").write_text("# unchanged\n")
    (live / "nodeops" / "state" / "upstream-app.json").write_text('{"servers": []}\n')
    for p in live.rglob("*"):
        if p.is_file():
            p.chmod(0o644)
    return live


def snapshot(live):
    return {str(p): p.read_bytes() for p in live.rglob("*") if p.is_file()}


def nginx_for(tmp_path, live, run_=run):
    return Nginx(run_, conf_dir=str(live), work_dir=str(tmp_path / "work"), binary=NGINX or "/bin/false",
                 pid_file=str(tmp_path / "nginx.pid"))


@needs_nginx
@pytest.mark.parametrize("candidate,valid,differs", [
    ({"nodeops/site.conf": "# unchanged\n"}, True, []),
    ({"nodeops/site.conf": "server { listen 127.0.0.1:9; return 204; }\n"}, True, ["nodeops/site.conf"]),
    ({"nodeops/site.conf": "server { listen 127.0.0.1:9; bogus_directive on; }\n"}, False, None),
])
def test_stage_validates_the_complete_candidate_and_never_writes_live(tmp_path, candidate, valid, differs):
    live = live_tree(tmp_path)
    before = snapshot(live)
    nginx = nginx_for(tmp_path, live)
    if not valid:
        with pytest.raises(NginxConfigError) as err:
            nginx.stage(candidate)
        assert "bogus_directive" in str(err.value) and "<staged>" in str(err.value) and not err.value.changed
        assert os.listdir(tmp_path / "work") == []
    else:
        stage, found = nginx.stage(candidate)
        assert found == differs
        # the staging copy survives only when there is something valid to promote
        assert (stage is not None) == bool(differs)
        assert sorted(os.listdir(tmp_path / "work")) == ([os.path.basename(stage)] if stage else [])
    assert snapshot(live) == before


@needs_nginx
def test_apply_promotes_only_what_differs_and_cleans_the_stage(tmp_path):
    live = live_tree(tmp_path)
    nginx = nginx_for(tmp_path, live)
    files = {"nodeops/site.conf": "server { listen 127.0.0.1:9; return 204; }\n", "nodeops/state/upstream-app.json": '{"servers": []}\n'}
    result = apply_change(nginx, files=files, reload_mode="never", want_diff=True)
    assert result["changed"] and result["promoted"] == ["nodeops/site.conf"]
    assert result["diff"][0]["before"] == "# unchanged\n"
    assert (live / "nodeops" / "site.conf").read_text() == files["nodeops/site.conf"]
    assert oct((live / "nodeops" / "site.conf").stat().st_mode & 0o777) == "0o644"
    assert os.listdir(tmp_path / "work") == []
    again = apply_change(nginx, files=files, reload_mode="never")
    assert not again["changed"] and again["promoted"] == []


@needs_nginx
def test_check_mode_reports_without_changing(tmp_path):
    live = live_tree(tmp_path)
    before = snapshot(live)
    result = apply_change(nginx_for(tmp_path, live), files={"nodeops/site.conf": "# new\n"}, check_mode=True,
                          lock=HostLock(str(tmp_path / "lock"), "me"))
    assert result["changed"] and result["promoted"] == ["nodeops/site.conf"]
    assert snapshot(live) == before and not (tmp_path / "lock").exists()


@needs_nginx
def test_compare_and_swap_refuses_a_record_changed_since_it_was_read(tmp_path):
    live = live_tree(tmp_path)
    read = read_files(str(live), ["nodeops/state/upstream-*.json"])
    assert list(read) == ["nodeops/state/upstream-app.json"]
    expect = {rel: sha256_text(text) for rel, text in read.items()}
    (live / "nodeops" / "state" / "upstream-app.json").write_text('{"servers": ["changed by another run"]}\n')
    before = snapshot(live)
    lock = HostLock(str(tmp_path / "lock"), "me")
    with pytest.raises(NginxConfigError) as err:
        apply_change(nginx_for(tmp_path, live), files={"nodeops/site.conf": "# new\n"}, expect=expect, lock=lock)
    assert "changed since it was read" in str(err.value) and not err.value.changed
    assert snapshot(live) == before
    assert not (tmp_path / "lock").exists(), "the lock is released after a refusal"


def test_lock_refuses_a_live_holder_and_breaks_dead_or_stale_ones(tmp_path):
    path = str(tmp_path / "lock")
    now = [os.stat(str(tmp_path)).st_mtime + 10]
    first = HostLock(path, "rolling_update ctl:1", clock=lambda: now[0])
    assert first.acquire() == "taken"
    with pytest.raises(NginxConfigError) as err:
        HostLock(path, "rolling_update ctl:2", stale_after=900, clock=lambda: now[0]).acquire()
    assert "held by rolling_update ctl:1" in str(err.value)
    breaker = HostLock(path, "rolling_update ctl:2", break_owners=["rolling_update ctl:1"], clock=lambda: now[0])
    assert "broke the lock of rolling_update ctl:1" in breaker.acquire()
    assert open(os.path.join(path, "owner")).read().strip() == "rolling_update ctl:2"
    now[0] += 1000
    late = HostLock(path, "nginx_tls", stale_after=900, clock=lambda: now[0])
    assert "stale" in late.acquire()
    late.release()
    assert not os.path.exists(path)


def fake_proc(tmp_path, master, children):
    proc = tmp_path / "proc"
    for pid, (ppid, args) in {**children, master: (1, "nginx: master process")}.items():
        d = proc / str(pid)
        d.mkdir(parents=True, exist_ok=True)
        (d / "stat").write_text("%d (nginx) S %d 0 0\n" % (pid, ppid))
        (d / "cmdline").write_bytes(args.replace(" ", "\0").encode())
        (d / "cgroup").write_text("0::/system.slice/nginx.service\n")
    (tmp_path / "nginx.pid").write_text("%d\n" % master)
    return proc


def test_reload_waits_until_only_new_workers_run(tmp_path):
    proc = fake_proc(tmp_path, 100, {101: (100, "nginx: worker process"), 102: (100, "nginx: cache manager process")})
    calls = []

    def fake_run(argv):
        calls.append(argv)
        return 0, "", ""

    polls = []

    def sleep(_seconds):
        # the reload replaces worker 101 by 103, visible only at the second poll
        polls.append(1)
        if len(polls) == 2:
            shutil.rmtree(str(proc / "101"))
            (proc / "103").mkdir()
            (proc / "103" / "stat").write_text("103 (nginx) S 100 0 0\n")
            (proc / "103" / "cmdline").write_bytes(b"nginx: worker process\0")

    nginx = Nginx(fake_run, conf_dir=str(tmp_path), pid_file=str(tmp_path / "nginx.pid"), proc=str(proc), sleep=sleep)
    assert nginx.workers(100) == [101]
    assert nginx.reload(timeout=30) == 100
    assert ["systemctl", "reload", "nginx.service"] in calls and calls[0][1:] == ["-t", "-q"]
    assert nginx.workers(100) == [103] and len(polls) == 2


def test_reload_refuses_an_invalid_live_configuration(tmp_path):
    proc = fake_proc(tmp_path, 100, {101: (100, "nginx: worker process")})
    calls = []

    def fake_run(argv):
        calls.append(argv)
        return (1, "", "nginx: [emerg] unknown directive") if "-t" in argv else (0, "", "")

    with pytest.raises(NginxConfigError) as err:
        Nginx(fake_run, conf_dir=str(tmp_path), pid_file=str(tmp_path / "nginx.pid"), proc=str(proc)).reload()
    assert "unknown directive" in str(err.value)
    assert not any(argv[0] == "systemctl" for argv in calls)


def test_drain_wait_counts_only_nginx_connections_and_times_out(tmp_path):
    proc = fake_proc(tmp_path, 100, {})
    nginx_line = "0 0 127.0.1.149:40000 127.0.1.141:3000 timer:(keepalive) cgroup:/system.slice/nginx.service"
    other_line = "0 0 127.0.1.149:40001 127.0.1.141:3000 cgroup:/system.slice/other.service"
    answers = {"127.0.1.141:3000": [[nginx_line, other_line], [other_line]], "127.0.1.142:3000": [[nginx_line]] * 100}
    clock = [0.0]

    def fake_run(argv):
        target = argv[-1]
        lines = answers[target].pop(0) if len(answers[target]) > 1 else answers[target][0]
        return 0, "\n".join(lines) + "\n", ""

    def sleep(seconds):
        clock[0] += seconds

    nginx = Nginx(fake_run, pid_file=str(tmp_path / "nginx.pid"), proc=str(proc), sleep=sleep, clock=lambda: clock[0])
    result = nginx.drain_wait([{"name": "app1", "address": "127.0.1.141", "port": 3000},
                               {"name": "app2", "address": "127.0.1.142", "port": 3000}], timeout=5, poll_interval=1)
    assert result[0]["server"] == "app1" and not result[0]["timed_out"] and result[0]["connections"] == 0
    assert result[1]["timed_out"] and result[1]["connections"] == 1
    assert 5 <= clock[0] <= 6
