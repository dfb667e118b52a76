"""Semantics of the health gate policy loop, with an injected clock (no real waiting)."""

import pytest

from ansible_collections.nodeops.stack.plugins.module_utils.health_policy import (
    HealthGate, Policy, PolicyError, percentile,
)
from ansible_collections.nodeops.stack.plugins.module_utils.probes import Probe, ProbeResult


class FakeClock:
    def __init__(self, start=1000.0):
        self.now = start
        self.sleeps = []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        assert seconds >= 0
        self.sleeps.append(round(seconds, 6))
        self.now += seconds

    def wall(self):
        return 1700000000.0 + (self.now - 1000.0)


class ScriptedProbe(Probe):
    """Outcomes from a script: True/False or (ok, latency_ms); the probe 'takes' latency_ms of fake time."""

    def __init__(self, clock, script, name='fake', kind='http', max_latency_ms=None, repeat_last=True):
        super(ScriptedProbe, self).__init__({'kind': kind, 'name': name, 'max_latency_ms': max_latency_ms}, 0)
        self.fake = clock
        self.script = list(script)
        self.repeat_last = repeat_last
        self.calls = []
        self.resets = 0

    def describe(self):
        return 'scripted %s' % self.name

    def reset(self):
        self.resets += 1

    def _run(self, timeout):
        step = self.script[len(self.calls)] if len(self.calls) < len(self.script) else self.script[-1]
        self.calls.append((self.fake.now, timeout))
        ok, latency = (step, 10.0) if isinstance(step, bool) else step
        latency = min(latency, timeout * 1000.0)
        self.fake.now += latency / 1000.0
        if not ok:
            return ProbeResult(False, latency_ms=latency, status=503, error='expected status in [200], got 503', excerpt='{"down":1}')
        return ProbeResult(True, latency_ms=latency, status=200)


def gate(clock, probes, **policy):
    return HealthGate(probes, Policy(**policy), clock=clock.clock, sleep=clock.sleep, wallclock=clock.wall)


def streaks(result):
    return [a['streak'] for a in result['timeline']]


def test_passes_after_threshold_consecutive_successes():
    clk = FakeClock()
    probe = ScriptedProbe(clk, [True])
    res = gate(clk, [probe], interval=1, success_threshold=3, deadline=30).run()
    assert res['passed'] is True
    assert res['attempts'] == 3
    assert streaks(res) == [1, 2, 3]
    assert res['elapsed'] == pytest.approx(2.01, abs=1e-6)  # (N-1)*interval + one probe
    assert 'passed' in res['msg'] and 'reason' not in res
    assert probe.resets == 1


def test_failure_resets_streak():
    clk = FakeClock()
    probe = ScriptedProbe(clk, [True, True, False, True, True, True])
    res = gate(clk, [probe], interval=1, success_threshold=3, deadline=30).run()
    assert res['passed'] is True
    assert res['attempts'] == 6
    assert streaks(res) == [1, 2, 0, 1, 2, 3]
    assert [a['outcome'] for a in res['timeline']] == ['ok', 'ok', 'fail', 'ok', 'ok', 'ok']


def test_flapping_target_never_passes_with_threshold_3():
    clk = FakeClock()
    script = [True, False] * 50
    probe = ScriptedProbe(clk, script)
    res = gate(clk, [probe], interval=0.5, success_threshold=3, deadline=20).run()
    assert res['passed'] is False
    assert res['reason'] == 'deadline'
    assert res['best_streak'] == 1
    assert max(streaks(res)) == 1
    assert clk.now - 1000.0 <= 20.0


def test_all_probes_must_pass_in_one_attempt():
    clk = FakeClock()
    good = ScriptedProbe(clk, [True], name='good')
    bad = ScriptedProbe(clk, [True, False, True], name='bad')
    res = gate(clk, [good, bad], interval=1, success_threshold=2, deadline=30).run()
    assert [a['outcome'] for a in res['timeline']] == ['ok', 'fail', 'ok', 'ok']
    assert res['stats']['good'] == dict(res['stats']['good'], count=4, ok=4, fail=0)
    assert res['stats']['bad']['fail'] == 1


def test_early_stop_at_consecutive_failure_threshold():
    clk = FakeClock()
    probe = ScriptedProbe(clk, [False])
    res = gate(clk, [probe], interval=1, success_threshold=3, failure_threshold=3, deadline=60).run()
    assert res['passed'] is False
    assert res['reason'] == 'failure_threshold'
    assert res['attempts'] == 3
    assert res['elapsed'] < 2.1
    assert "probe 'fake' (scripted fake): expected status in [200], got 503 on 3 consecutive attempts" in res['msg']
    assert 'last response: {"down":1}' in res['msg']
    assert '3 consecutive failed attempt(s) reached failure_threshold 3' in res['msg']


def test_failure_threshold_counts_consecutive_not_total():
    clk = FakeClock()
    probe = ScriptedProbe(clk, [False, False, True] * 10 + [True])
    res = gate(clk, [probe], interval=1, success_threshold=3, failure_threshold=3, deadline=25).run()
    # never 3 failures in a row, never 3 successes in a row: only the deadline ends it
    assert res['reason'] == 'deadline'
    assert res['attempts'] > 3


def test_deadline_honoured_within_one_interval_and_never_exceeded():
    clk = FakeClock()
    probe = ScriptedProbe(clk, [(False, 300.0)])
    res = gate(clk, [probe], interval=2, success_threshold=1, timeout=1, deadline=9).run()
    elapsed = clk.now - 1000.0
    assert res['reason'] == 'deadline'
    assert elapsed <= 9.0
    assert elapsed > 9.0 - 2.0  # stopped within one interval of the deadline
    starts = [c[0] - 1000.0 for c in probe.calls]
    assert starts == pytest.approx([0, 2, 4, 6, 8])


def test_probe_timeout_capped_by_remaining_time():
    clk = FakeClock()
    probe = ScriptedProbe(clk, [(False, 10000.0)])  # would take 10 s, but the timeout caps it
    res = gate(clk, [probe], interval=1, success_threshold=1, timeout=5, deadline=7).run()
    timeouts = [round(t, 6) for _s, t in probe.calls]
    assert timeouts == [5.0, 2.0]  # second attempt at t=5 gets only the 2 s left
    assert clk.now - 1000.0 == pytest.approx(7.0)
    assert res['reason'] == 'deadline'


def test_never_starts_attempt_without_time_left():
    clk = FakeClock()
    probe = ScriptedProbe(clk, [(False, 1000.0 * 4.98)])
    gate(clk, [probe], interval=0.01, success_threshold=1, timeout=10, deadline=5).run()
    # first attempt ends at 4.98 s; 0.02 s < 0.05 s minimum left: no second attempt
    assert len(probe.calls) == 1


def test_stops_early_when_streak_can_no_longer_fit():
    clk = FakeClock()
    probe = ScriptedProbe(clk, [False] * 6 + [True])
    res = gate(clk, [probe], interval=1, success_threshold=5, deadline=10).run()
    # after the failure at t=5, five more attempts (t=6..10) cannot fit before t=10
    assert res['passed'] is False
    assert res['reason'] == 'deadline'
    assert res['attempts'] == 6
    assert 'cannot finish' in res['msg']
    assert clk.now - 1000.0 < 6.1


def test_initial_delay_respected():
    clk = FakeClock()
    probe = ScriptedProbe(clk, [True])
    res = gate(clk, [probe], initial_delay=3, interval=1, success_threshold=2, deadline=10).run()
    assert clk.sleeps[0] == 3
    assert probe.calls[0][0] - 1000.0 == pytest.approx(3.0)
    assert res['timeline'][0]['offset_s'] == pytest.approx(3.0)
    assert res['elapsed'] == pytest.approx(4.01)


def test_period_measured_from_attempt_start_and_overruns_delay_next():
    clk = FakeClock()
    probe = ScriptedProbe(clk, [(True, 300.0), (True, 1500.0), (True, 100.0)])
    gate(clk, [probe], interval=1, success_threshold=3, timeout=5, deadline=30).run()
    starts = [round(c[0] - 1000.0, 6) for c in probe.calls]
    assert starts == [0.0, 1.0, 2.5]


def test_max_latency_ms_fails_slow_probe():
    clk = FakeClock()
    probe = ScriptedProbe(clk, [(True, 50.0), (True, 250.0), (True, 60.0)], max_latency_ms=200)
    res = gate(clk, [probe], interval=1, success_threshold=2, deadline=30).run()
    assert [a['outcome'] for a in res['timeline']] == ['ok', 'fail', 'ok', 'ok']
    assert res['timeline'][1]['probes'][0]['error'] == 'expected latency <= 200 ms (max_latency_ms), got 250.0 ms'


def test_latency_percentile_enforced_when_streak_reached():
    clk = FakeClock()
    probe = ScriptedProbe(clk, [(True, 20.0), (True, 20.0), (True, 20.0), (True, 400.0)])
    res = gate(clk, [probe], interval=1, success_threshold=4, deadline=30,
               latency_percentile={'percentile': 95, 'max_ms': 300}).run()
    assert res['passed'] is False
    assert res['reason'] == 'latency_percentile'
    assert res['latency_percentile']['values']['fake'] == 400.0
    assert 'expected p95 latency <= 300 ms (latency_percentile), got 400.0 ms over 4 successful result(s)' in res['msg']


def test_latency_percentile_passes_under_limit():
    clk = FakeClock()
    probe = ScriptedProbe(clk, [(True, 20.0), (True, 20.0), (True, 20.0), (True, 400.0)])
    res = gate(clk, [probe], interval=1, success_threshold=4, deadline=30,
               latency_percentile={'percentile': 50, 'max_ms': 300}).run()
    assert res['passed'] is True
    assert res['latency_percentile']['values']['fake'] == 20.0


def test_percentile_ignores_failed_results():
    clk = FakeClock()
    probe = ScriptedProbe(clk, [(False, 900.0), (True, 20.0), (True, 30.0)])
    res = gate(clk, [probe], interval=1, success_threshold=2, deadline=30,
               latency_percentile={'percentile': 99, 'max_ms': 100}).run()
    assert res['passed'] is True
    assert res['stats']['fake']['latency_ms'] == {'min': 20.0, 'p50': 20.0, 'p95': 30.0, 'p99': 30.0, 'max': 30.0}
    assert res['stats']['fake']['fail'] == 1


def test_timeline_limit_keeps_last_attempts():
    clk = FakeClock()
    probe = ScriptedProbe(clk, [False] * 9 + [True])
    res = gate(clk, [probe], interval=1, success_threshold=1, deadline=30, timeline_limit=3).run()
    assert res['attempts'] == 10
    assert [a['attempt'] for a in res['timeline']] == [8, 9, 10]
    assert res['timeline_dropped'] == 7
    assert res['stats']['fake']['count'] == 10


def test_timeline_entries_carry_timestamps_and_probe_details():
    clk = FakeClock()
    probe = ScriptedProbe(clk, [False, True])
    res = gate(clk, [probe], interval=1, success_threshold=1, deadline=30).run()
    first = res['timeline'][0]
    assert first['timestamp'] == '2023-11-14T22:13:20.000Z'
    item = first['probes'][0]
    assert item == {'name': 'fake', 'kind': 'http', 'timestamp': '2023-11-14T22:13:20.000Z', 'outcome': 'fail',
                    'latency_ms': 10.0, 'status': 503, 'error': 'expected status in [200], got 503', 'excerpt': '{"down":1}'}
    assert res['timeline'][1]['probes'][0]['outcome'] == 'ok'
    assert 'excerpt' not in res['timeline'][1]['probes'][0]


def test_failure_message_when_last_attempt_passed_names_last_failure():
    clk = FakeClock()
    probe = ScriptedProbe(clk, [False, (True, 1600.0)])  # the success overruns its slot: no time for another
    res = gate(clk, [probe], interval=1, success_threshold=2, deadline=2.5).run()
    assert res['passed'] is False
    assert res['timeline'][-1]['outcome'] == 'ok'
    assert "got 503 on attempt 1; last response" in res['msg']


@pytest.mark.parametrize('values,pct,expected', [
    ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 50, 5),
    ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 95, 10),
    ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 90, 9),
    ([5], 99, 5),
    ([3, 1, 2], 100, 3),
    ([3, 1, 2], 0.1, 1),
    ([], 50, None),
])
def test_nearest_rank_percentile(values, pct, expected):
    assert percentile(values, pct) == expected


@pytest.mark.parametrize('kwargs,fragment', [
    (dict(interval=0), 'interval: expected a number of seconds > 0, got 0'),
    (dict(interval=-1), 'interval: expected a number of seconds > 0, got -1'),
    (dict(timeout=0), 'timeout: expected a number of seconds > 0, got 0'),
    (dict(deadline=-5), 'deadline: expected a number of seconds > 0, got -5'),
    (dict(initial_delay=-1), 'initial_delay: expected a number of seconds >= 0, got -1'),
    (dict(success_threshold=0), 'success_threshold: expected an integer >= 1'),
    (dict(failure_threshold=0), 'failure_threshold: expected an integer >= 1'),
    (dict(latency_percentile={'percentile': 0, 'max_ms': 10}), 'latency_percentile.percentile: expected a percentile in (0, 100], such as 95, got 0'),
    (dict(latency_percentile={'percentile': 101, 'max_ms': 10}), 'got 101'),
    (dict(latency_percentile={'percentile': 95, 'max_ms': 0}), 'latency_percentile.max_ms: expected a latency in milliseconds > 0, got 0'),
    (dict(deadline=4, interval=1, success_threshold=5), 'deadline: expected more than initial_delay + (success_threshold - 1) * interval = 0 + 4 * 1 = 4s'),
    (dict(deadline=10, initial_delay=8, interval=1, success_threshold=3), 'got 10s; this policy can never pass'),
])
def test_policy_validation(kwargs, fragment):
    with pytest.raises(PolicyError) as err:
        Policy(**kwargs)
    assert fragment in str(err.value)


def test_policy_just_feasible_is_accepted():
    Policy(deadline=4.5, interval=1, success_threshold=5)
