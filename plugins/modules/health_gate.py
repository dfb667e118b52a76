#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) nodeops.stack maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type  # pylint: disable=invalid-name

DOCUMENTATION = r'''
---
module: health_gate
short_description: Decide from real probes whether a rollout may proceed
version_added: 0.1.0
description:
  - Runs one or more probes (HTTP(S), TCP, TLS certificate, Redis, MongoDB, PM2) repeatedly under a policy modelled on
    Kubernetes probes and Argo Rollouts analysis, and passes only after O(success_threshold) consecutive successful attempts.
  - An attempt runs every probe once, in order, and succeeds only when all of them pass. A failed attempt resets the streak.
  - Attempt k starts at O(initial_delay) + k * O(interval) seconds after the module started (the period is measured from the
    start of one attempt to the start of the next); an attempt that overruns delays the next one, attempts never overlap.
  - The O(deadline) bounds the whole run. An attempt is only started when at least min(O(timeout), 0.05) seconds remain,
    each probe's timeout is capped by the time left, and the gate stops as soon as the streak still needed can no longer
    fit before the deadline. Latency is measured in milliseconds with a monotonic clock.
  - On failure the task fails with a message saying which probe failed which expectation on how many consecutive attempts,
    with an excerpt of the last response (at most 512 bytes), and returns the same timeline and stats as on success.
  - Secrets never reach the output. Passwords in URL user information, sensitive query parameters, the values of
    sensitive headers (O(sensitive_headers), plus any header whose name looks like a credential) and O(probes[].password)
    are masked in the timeline, the message, the module invocation and its syslog entry.
  - Read-only, so it runs its probes in check mode too, and always reports C(changed=false). It can run on the controller
    (C(delegate_to=localhost)) or on the node itself.
author:
  - nodeops.stack maintainers (@nodeops)
extends_documentation_fragment:
  - nodeops.stack.attributes
  - nodeops.stack.attributes.platform
attributes:
  check_mode:
    support: full
    details:
      - The probes run in check mode as well; they are read-only.
  diff_mode:
    support: none
  platform:
    platforms: posix
requirements:
  - redis (Python library, only for O(probes[].kind=redis) probes)
  - pymongo (Python library, only for O(probes[].kind=mongodb) probes)
  - pm2 (only for O(probes[].kind=pm2) probes)
  - cryptography (Python library, optional; used to read the expiry of unvalidated certificates in tls probes)
notes:
  - Each HTTP(S) attempt uses a fresh connection (C(Connection) C(close)), so no probe rides a cached connection, and TLS
    is handshaken anew each time. Redirects are not followed; list 3xx codes in O(probes[].status_codes) to accept them.
  - Certificates are verified with OpenSSL's defaults on every Python version (Python 3.13's extra strict X.509 checks are
    turned off so that the result does not depend on the Python version of the node).
  - For tls probes with O(probes[].validate_certs=false) the certificate expiry is read with the C(cryptography) library
    when it is installed, else with CPython's built-in certificate decoder, else with the C(openssl x509) command.
  - A pm2 probe never starts a PM2 daemon (it fails when none runs for the PM2_HOME) and never returns the app's environment.
options:
  probes:
    description:
      - The probes run in each attempt, in this order. All must pass for the attempt to count as a success.
      - Options apply only to the kinds named in their description; giving an option to another kind is an error.
    type: list
    elements: dict
    required: true
    suboptions:
      kind:
        description:
          - What to probe.
          - V(http) and V(https) send one request and check the response (V(https) requires an C(https://) URL,
            V(http) accepts both).
          - V(tcp) connects and optionally reads a banner.
          - V(tls) handshakes and checks the certificate's remaining validity and the negotiated protocol.
          - V(redis) sends C(PING) and optionally checks C(ROLE).
          - V(mongodb) runs C(ping) and optionally checks the member state reported by C(hello).
          - V(pm2) reads C(pm2 jlist) and checks that all instances of an app are online and none restarted during the gate.
        type: str
        required: true
        choices: [http, https, tcp, tls, redis, mongodb, pm2]
      name:
        description:
          - Name of the probe in the timeline, the stats and messages. Must be unique.
          - Defaults to the kind followed by the position, for example V(http[0]).
        type: str
      timeout:
        description:
          - Timeout of this probe in seconds, overriding the top-level O(timeout). Always capped by the time left before O(deadline).
        type: float
      max_latency_ms:
        description:
          - All kinds. The probe fails when it took longer than this many milliseconds (connect to last byte).
        type: float
      url:
        description:
          - V(http)/V(https) (required) the URL to request, such as C(https://127.0.0.1:8443/health).
            A C(user:password@) part is sent as HTTP basic authentication and masked in all output.
          - V(redis) a C(redis://), C(rediss://) or C(unix://) URL instead of O(probes[].host)/O(probes[].port).
        type: str
      method:
        description:
          - V(http)/V(https) request method. Default V(GET).
        type: str
        choices: [GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS]
      headers:
        description:
          - V(http)/V(https) request headers. Values of headers named in O(sensitive_headers), or whose name contains
            C(auth), C(token), C(secret), C(passw), C(api-key), C(session), C(cookie), C(credential) or C(signature), are masked in all output.
        type: dict
      body:
        description:
          - V(http)/V(https) request body. A dict or list is sent as JSON (with an C(application/json) C(Content-Type) unless set).
        type: raw
      status_codes:
        description:
          - V(http)/V(https) accepted status codes (100-599). Default V([200]).
        type: list
        elements: int
      body_regex:
        description:
          - V(http)/V(https) Python regular expression that must match (C(re.search)) the response body (first 1 MiB).
        type: str
      json:
        description:
          - V(http)/V(https) expectations on the JSON response body; all must hold.
        type: list
        elements: dict
        suboptions:
          path:
            description:
              - Dotted path into the document, with C([n]) list indices (negative from the end), for example
                C(checks.redis.status), C(items[0].name) or C([0].ok).
            type: str
            required: true
          equals:
            description:
              - The value at O(probes[].json[].path) must equal this (booleans never equal numbers). A JSON C(null) cannot
                be expected this way (an unset option is null); use O(probes[].json[].exists) instead.
              - Exactly one of O(probes[].json[].equals), O(probes[].json[].in) and O(probes[].json[].exists) is required.
            type: raw
          in:
            description:
              - The value at O(probes[].json[].path) must equal one of these.
            type: list
            elements: raw
          exists:
            description:
              - V(true) the path must exist, V(false) it must not.
            type: bool
      validate_certs:
        description:
          - V(https), V(tls), V(redis) (with O(probes[].tls)) verify the server certificate and host name. Default V(true).
        type: bool
      ca_path:
        description:
          - V(https), V(tls), V(redis) CA bundle file (PEM) or directory used to verify the server certificate, in addition to the system store.
        type: path
      server_name:
        description:
          - V(https) name sent as SNI, verified against the certificate and sent as the C(Host) header (V(http) C(Host) header only),
            while connecting to the URL's host. Lets you probe one node by address.
          - V(tls) name sent as SNI and verified against the certificate. Defaults to O(probes[].host).
        type: str
      client_cert:
        description:
          - V(https) client certificate (PEM) for mutual TLS. May hold the key as well.
        type: path
      client_key:
        description:
          - V(https) private key (PEM, unencrypted) for O(probes[].client_cert).
        type: path
      host:
        description:
          - V(tcp), V(tls) (required) host name or address to connect to.
          - V(redis) host, default V(127.0.0.1), unless O(probes[].url) is given.
        type: str
      port:
        description:
          - V(tcp) (required) port.
          - V(tls) port, default V(443).
          - V(redis) port, default V(6379).
        type: int
      banner_regex:
        description:
          - V(tcp) regular expression the data sent by the server after connecting must match, for example C(^SSH-2\.0).
        type: str
      banner_bytes:
        description:
          - V(tcp) read at most this many bytes (1-65536) while waiting for O(probes[].banner_regex). Default V(1024).
        type: int
      min_days_left:
        description:
          - V(tls) the certificate must stay valid at least this many more days (fractions allowed).
        type: float
      min_protocol:
        description:
          - V(tls) lowest acceptable negotiated protocol; the handshake offers nothing older.
        type: str
        choices: [TLSv1.2, TLSv1.3]
      username:
        description:
          - V(redis) ACL user name.
          - V(mongodb) user name (instead of one in O(probes[].uri)).
        type: str
      password:
        description:
          - V(redis) password (C(AUTH)).
          - V(mongodb) password (instead of one in O(probes[].uri)).
        type: str
      db:
        description:
          - V(redis) database number. Default V(0).
        type: int
      tls:
        description:
          - V(redis) connect with TLS (with O(probes[].host)). Default V(false).
        type: bool
      role:
        description:
          - V(redis) expected replication role from C(ROLE). V(slave) and V(replica) are the same.
        type: str
        choices: [master, slave, replica]
      uri:
        description:
          - V(mongodb) (required) connection string, for example C(mongodb://user:pass@127.0.0.1:27017/?directConnection=true).
            The password is masked in all output. The server selection, connect and socket timeouts are set to the probe timeout.
        type: str
      state:
        description:
          - V(mongodb) expected member state derived from C(hello). V(STANDALONE) is a server that is not in a replica set,
            V(OTHER) a member that is neither primary, secondary nor arbiter (for example recovering).
        type: str
        choices: [PRIMARY, SECONDARY, ARBITER, STANDALONE, OTHER]
      app:
        description:
          - V(pm2) (required) PM2 application name.
        type: str
      pm2_home:
        description:
          - V(pm2) PM2_HOME of the daemon to ask. Default C(~/.pm2) of the user running the module.
        type: path
      pm2_binary:
        description:
          - V(pm2) path to the C(pm2) executable; its directory is put first on PATH so the C(node) beside it is used.
            Default C(pm2) from PATH.
        type: path
      instances:
        description:
          - V(pm2) expected number of instances (1 or more). Without it any number of instances, all online, passes.
        type: int
  initial_delay:
    description:
      - Seconds to wait before the first attempt (counts against O(deadline)).
    type: float
    default: 0
  interval:
    description:
      - Seconds from the start of one attempt to the start of the next (greater than 0).
    type: float
    default: 1
  timeout:
    description:
      - Default timeout of each probe in seconds (greater than 0); see O(probes[].timeout).
    type: float
    default: 5
  success_threshold:
    description:
      - Consecutive successful attempts required to pass (1 or more). A failed attempt resets the count.
    type: int
    default: 3
  failure_threshold:
    description:
      - Stop early and fail after this many B(consecutive) failed attempts (as Kubernetes counts them).
      - Without it only O(deadline) ends a failing gate.
    type: int
  deadline:
    description:
      - Overall seconds the gate may take, O(initial_delay) included.
      - Must exceed O(initial_delay) + (O(success_threshold) - 1) * O(interval), otherwise the gate could never pass.
    type: float
    default: 60
  latency_percentile:
    description:
      - Latency limit on a percentile, checked per probe over the latencies of all its successful results in the run, once
        the streak is reached. Exceeding it fails the gate. Nearest-rank percentile.
    type: dict
    suboptions:
      percentile:
        description:
          - Percentile in (0, 100], for example V(95).
        type: float
        required: true
      max_ms:
        description:
          - Highest allowed latency at that percentile, in milliseconds.
        type: float
        required: true
  sensitive_headers:
    description:
      - Request header names (case-insensitive) whose values are masked in all output, in addition to any header whose name
        looks like a credential.
    type: list
    elements: str
    default: [authorization, proxy-authorization, cookie, set-cookie, x-api-key, x-auth-token, x-access-token, x-csrf-token]
  timeline_limit:
    description:
      - Keep only the last this many attempts in RV(timeline) (RV(stats) always cover all attempts).
    type: int
    default: 100
seealso:
  - name: Kubernetes liveness, readiness and startup probes
    description: The probe semantics (period, success and failure thresholds) this module follows.
    link: https://kubernetes.io/docs/tasks/configure-pod-container/configure-liveness-readiness-startup-probes/
  - module: ansible.builtin.uri
  - module: ansible.builtin.wait_for
'''

EXAMPLES = r'''
- name: Gate on the API health endpoint of one node (3 consecutive successes, 1 per second, at most 60 s)
  nodeops.stack.health_gate:
    probes:
      - kind: https
        name: api
        url: "https://{{ ansible_host }}/health"
        server_name: api.example.com
        ca_path: /etc/ssl/certs/internal-ca.pem
        headers:
          Authorization: "Bearer {{ health_token }}"
        status_codes: [200]
        json:
          - path: status
            equals: ok
          - path: checks.redis.status
            in: [ok, degraded]
          - path: checks.mongodb.latency_ms
            exists: true
        max_latency_ms: 300
    success_threshold: 3
    interval: 1
    deadline: 60
  delegate_to: localhost

- name: Plain HTTP with a body check, a warm-up delay and an early stop after 5 consecutive failures
  nodeops.stack.health_gate:
    probes:
      - kind: http
        url: http://127.0.0.1:3000/ready
        body_regex: '"ready":\s*true'
    initial_delay: 2
    interval: 0.5
    failure_threshold: 5
    deadline: 30

- name: TCP port open and speaking SSH
  nodeops.stack.health_gate:
    probes:
      - kind: tcp
        host: 127.0.0.1
        port: 22
        banner_regex: '^SSH-2\.0'
    success_threshold: 1

- name: Certificate valid for 21 more days and TLS 1.2 or newer
  nodeops.stack.health_gate:
    probes:
      - kind: tls
        host: "{{ ansible_host }}"
        port: 443
        server_name: www.example.com
        min_days_left: 21
        min_protocol: TLSv1.2
    success_threshold: 1
  delegate_to: localhost

- name: Redis answers PING and is the master
  nodeops.stack.health_gate:
    probes:
      - kind: redis
        host: 127.0.0.1
        port: 6379
        password: "{{ redis_password }}"
        role: master

- name: MongoDB answers ping and is the primary
  nodeops.stack.health_gate:
    probes:
      - kind: mongodb
        uri: "mongodb://health:{{ mongo_health_password }}@127.0.0.1:27017/admin?directConnection=true"
        state: PRIMARY
        timeout: 3

- name: After a deploy, all 4 PM2 instances stay online without a restart for 10 s, and p95 latency stays under 250 ms
  nodeops.stack.health_gate:
    probes:
      - kind: pm2
        app: api
        pm2_home: /home/app/.pm2
        pm2_binary: /usr/local/bin/pm2
        instances: 4
      - kind: http
        name: api
        url: http://127.0.0.1:3000/health
    interval: 1
    success_threshold: 10
    failure_threshold: 3
    deadline: 45
    latency_percentile:
      percentile: 95
      max_ms: 250
  become: true
  become_user: app
  register: gate

- name: Show how long the gate took and the API latency
  ansible.builtin.debug:
    msg: "{{ gate.elapsed }} s, p95 {{ gate.stats.api.latency_ms.p95 }} ms"
'''

RETURN = r'''
passed:
  description: Whether the gate passed (also true/false in the failed result).
  returned: always
  type: bool
  sample: true
msg:
  description: Summary; on failure which probe failed which expectation, how often, and the last response excerpt.
  returned: always
  type: str
  sample: >-
    health gate failed after 3 attempt(s) in 2.004s (best streak 0 of 3 required): 3 consecutive failed attempt(s) reached failure_threshold 3;
    probe 'api' (https GET https://127.0.1.2/health): expected status in [200], got 503 on 3 consecutive attempts; last response: {"status":"down"}
reason:
  description: Why the gate failed, one of V(deadline), V(failure_threshold), V(latency_percentile).
  returned: when the gate failed after probing
  type: str
  sample: failure_threshold
attempts:
  description: Number of attempts made.
  returned: always
  type: int
  sample: 3
elapsed:
  description: Seconds from the start of the module's gate to the decision (monotonic clock).
  returned: always
  type: float
  sample: 2.013
streak:
  description: Consecutive successful attempts at the end.
  returned: always
  type: int
  sample: 3
best_streak:
  description: Longest run of consecutive successful attempts.
  returned: always
  type: int
  sample: 3
timeline:
  description: The attempts (the last O(timeline_limit) of them), oldest first.
  returned: always
  type: list
  elements: dict
  contains:
    attempt:
      description: Attempt number, from 1.
      type: int
      sample: 1
    timestamp:
      description: Start of the attempt, ISO 8601 UTC.
      type: str
      sample: '2025-01-31T10:00:00.123Z'
    offset_s:
      description: Start of the attempt in seconds after the gate started.
      type: float
      sample: 0.0
    outcome:
      description: V(ok) when every probe passed, else V(fail).
      type: str
      sample: ok
    streak:
      description: Consecutive successful attempts after this one.
      type: int
      sample: 1
    probes:
      description: One entry per probe.
      type: list
      elements: dict
      contains:
        name:
          description: Probe name.
          type: str
          sample: api
        kind:
          description: Probe kind.
          type: str
          sample: https
        timestamp:
          description: Start of this probe, ISO 8601 UTC.
          type: str
          sample: '2025-01-31T10:00:00.124Z'
        outcome:
          description: V(ok) or V(fail).
          type: str
          sample: ok
        latency_ms:
          description: Duration of the probe in milliseconds (connect to last byte for HTTP).
          type: float
          sample: 12.512
        status:
          description: >-
            HTTP status code, or a short status such as V(connected), V(TLSv1.3), V(PONG role=master),
            V(ok state=PRIMARY), V(online 2/2).
          type: raw
          sample: 200
        error:
          description: The failed expectation or the connection error; null when the probe passed.
          type: str
          sample: expected status in [200], got 503
        detail:
          description: >-
            Kind-specific measurements, such as C(connect_ms), C(tls_ms), C(ttfb_ms), C(total_ms), C(bytes) (HTTP),
            C(protocol), C(days_left), C(not_after) (TLS), C(role), C(state), C(processes) (PM2).
          type: dict
          returned: when available
          sample: {"connect_ms": 0.21, "tls_ms": 3.1, "ttfb_ms": 5.0, "total_ms": 5.2, "bytes": 42}
        excerpt:
          description: First 512 bytes of the response (or banner) of a failed probe.
          type: str
          returned: when the probe failed and there was a response
          sample: '{"status":"down"}'
timeline_dropped:
  description: Number of older attempts left out of RV(timeline) because of O(timeline_limit).
  returned: always
  type: int
  sample: 0
stats:
  description: Per probe name, counts and latency of the successful results over all attempts.
  returned: always
  type: dict
  sample:
    api:
      kind: https
      target: https GET https://127.0.0.1:8443/health
      count: 5
      ok: 5
      fail: 0
      latency_ms: {"min": 3.2, "p50": 4.1, "p95": 7.9, "p99": 7.9, "max": 7.9}
latency_percentile:
  description: The configured percentile, its limit and each probe's value over its successful results.
  returned: when O(latency_percentile) is set and probing started
  type: dict
  sample: {"percentile": 95, "max_ms": 300, "values": {"api": 7.9}}
'''

from ansible_collections.nodeops.stack.plugins.module_utils.health_module import HealthGateModule, run_module
from ansible_collections.nodeops.stack.plugins.module_utils.health_redact import DEFAULT_SENSITIVE_HEADERS
from ansible_collections.nodeops.stack.plugins.module_utils.probes import (
    HTTP_METHODS, KINDS, MONGODB_STATES, REDIS_ROLES, TLS_VERSIONS,
)


def argument_spec():
    json_expectation = {
        'path': dict(type='str', required=True),
        'equals': dict(type='raw'),
        'in': dict(type='list', elements='raw'),
        'exists': dict(type='bool'),
    }
    probe = dict(
        kind=dict(type='str', required=True, choices=list(KINDS)),
        name=dict(type='str'),
        timeout=dict(type='float'),
        max_latency_ms=dict(type='float'),
        url=dict(type='str'),
        method=dict(type='str', choices=list(HTTP_METHODS)),
        headers=dict(type='dict'),
        body=dict(type='raw'),
        status_codes=dict(type='list', elements='int'),
        body_regex=dict(type='str'),
        json=dict(type='list', elements='dict', options=json_expectation),
        validate_certs=dict(type='bool'),
        ca_path=dict(type='path'),
        server_name=dict(type='str'),
        client_cert=dict(type='path'),
        client_key=dict(type='path', no_log=False),
        host=dict(type='str'),
        port=dict(type='int'),
        banner_regex=dict(type='str'),
        banner_bytes=dict(type='int'),
        min_days_left=dict(type='float'),
        min_protocol=dict(type='str', choices=list(TLS_VERSIONS)),
        username=dict(type='str'),
        password=dict(type='str', no_log=True),
        db=dict(type='int'),
        tls=dict(type='bool'),
        role=dict(type='str', choices=list(REDIS_ROLES)),
        uri=dict(type='str'),
        state=dict(type='str', choices=list(MONGODB_STATES)),
        app=dict(type='str'),
        pm2_home=dict(type='path'),
        pm2_binary=dict(type='path'),
        instances=dict(type='int'),
    )
    return dict(
        probes=dict(type='list', elements='dict', required=True, options=probe),
        initial_delay=dict(type='float', default=0),
        interval=dict(type='float', default=1),
        timeout=dict(type='float', default=5),
        success_threshold=dict(type='int', default=3),
        failure_threshold=dict(type='int'),
        deadline=dict(type='float', default=60),
        latency_percentile=dict(type='dict', options=dict(
            percentile=dict(type='float', required=True),
            max_ms=dict(type='float', required=True),
        )),
        sensitive_headers=dict(type='list', elements='str', no_log=False, default=list(DEFAULT_SENSITIVE_HEADERS)),
        timeline_limit=dict(type='int', default=100),
    )


def main():
    # HealthGateModule masks credentials embedded in probe URLs and headers (not standalone options)
    # in the syslog invocation entry, the result and invocation.module_args.
    module = HealthGateModule(argument_spec=argument_spec(), supports_check_mode=True)
    run_module(module)


if __name__ == '__main__':
    main()
