"""End to end: nodeops.stack.health_gate through a real ansible-playbook run (localhost, connection local) at -vvv."""


from conftest import REDIS_PASSWORD  # pylint: disable=import-error
from health_gate_support import Reply, free_port  # pylint: disable=import-error
from playbook_runner import run_playbook  # pylint: disable=import-error

URL_PASSWORD = 'UrlPassw0rd-in-userinfo'
BEARER = 'BearerT0ken-Secret-789'

PLAYBOOK = """
- name: health_gate end to end
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    probes:
      - kind: http
        name: basic
        url: "http://bob:{url_password}@127.0.0.1:{port}/health"
        json:
          - path: status
            equals: ok
      - kind: http
        name: bearer
        url: "http://127.0.0.1:{port}/health"
        headers:
          Authorization: "Bearer {bearer}"
          Accept: application/json
      - kind: redis
        name: cache
        port: {redis_port}
        password: "{redis_password}"
        role: master
  tasks:
    - name: Gate passes
      nodeops.stack.health_gate:
        probes: "{{{{ probes }}}}"
        interval: 0.1
        success_threshold: 2
        deadline: 20
      register: gate

    - name: Gate runs its probes in check mode too
      nodeops.stack.health_gate:
        probes: "{{{{ probes }}}}"
        interval: 0.1
        success_threshold: 3
        deadline: 20
      check_mode: true
      register: gate_check

    - name: Failing gate (closed port, password in URL)
      nodeops.stack.health_gate:
        probes:
          - kind: http
            name: down
            url: "http://bob:{url_password}@127.0.0.1:{closed}/health"
            headers:
              Authorization: "Bearer {bearer}"
        interval: 0.05
        success_threshold: 1
        failure_threshold: 2
      register: gate_fail
      ignore_errors: true

    - name: Check results
      ansible.builtin.assert:
        that:
          - gate is not changed
          - gate.passed
          - gate.attempts == 2
          - gate.stats.basic.ok == 2
          - gate.stats.cache.ok == 2
          - gate.timeline[0].probes[2].status == 'PONG role=master'
          - gate_check is not changed
          - gate_check.passed
          - gate_check.attempts == 3
          - gate_check.stats.bearer.count == 3
          - gate_fail is failed
          - not gate_fail.passed
          - gate_fail.reason == 'failure_threshold'
          - "'connect failed: connection refused on 2 consecutive attempts' in gate_fail.msg"
          - "'http://bob:********@127.0.0.1:{closed}/health' in gate_fail.msg"
"""


def test_playbook_end_to_end_check_mode_and_no_secret_in_vvv_output(http_server, redis_server, tmp_path):
    http_server.set_script([Reply(body={'status': 'ok'})])
    closed = free_port()
    playbook = tmp_path / 'gate.yml'
    playbook.write_text(PLAYBOOK.format(port=http_server.port, url_password=URL_PASSWORD, bearer=BEARER,
                                        redis_port=redis_server, redis_password=REDIS_PASSWORD, closed=closed))
    returncode, out = run_playbook(playbook, tmp_path, '-vvv', timeout=180)
    assert returncode == 0, out[-6000:]
    assert 'ok=4' in out and 'failed=0' in out and 'ignored=1' in out, out[-3000:]
    # the module really ran as a module, twice passing (normal + check mode), and the check-mode run probed
    assert out.count('health gate passed') >= 2
    bearer_requests = [r for r in http_server.requests if r['headers'].get('Authorization') == 'Bearer ' + BEARER]
    assert len(bearer_requests) == 2 + 3
    # -vvv printed the invocation with module_args, masked
    assert '"module_args"' in out and '********' in out
    for secret in (URL_PASSWORD, BEARER, REDIS_PASSWORD):
        assert secret not in out, 'secret %r leaked into ansible-playbook -vvv output' % secret
