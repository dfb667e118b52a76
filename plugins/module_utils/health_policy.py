# -*- coding: utf-8 -*-
# Copyright (c) nodeops.stack maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Policy loop of the health_gate module: when to probe, when to stop, what to report.

Semantics (the module documentation repeats them for users):

* Attempt k (k = 0, 1, ...) is scheduled at ``start + initial_delay + k * interval``
  (period measured from attempt start, like Kubernetes' periodSeconds); an attempt
  that overruns its slot delays the next one, attempts never overlap.
* An attempt runs every probe once, in order; it succeeds only when all pass.
* ``success_threshold`` consecutive successful attempts pass the gate; any failed
  attempt resets the streak to 0.
* ``failure_threshold`` counts *consecutive* failed attempts (as Kubernetes does);
  reaching it stops the gate early.  Unset: only the deadline stops it.
* ``deadline`` bounds the whole run, initial delay included.  An attempt is only
  started when at least ``min(timeout, 0.05s)`` remain, each probe's timeout is
  capped by the time left, and the gate stops as soon as the remaining streak can
  no longer fit before the deadline.  So the gate never runs past the deadline
  (beyond scheduling jitter) and a hopeless gate fails early.
* ``latency_percentile`` is checked, per probe, over the latencies of all its
  successful results in the run once the streak is reached; exceeding it fails the gate.

Clock, sleep and wall clock are injectable so the semantics are unit-tested
without waiting.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type  # pylint: disable=invalid-name

import math
import time
from datetime import datetime, timezone

from ansible_collections.nodeops.stack.plugins.module_utils.probes import ProbeResult

MIN_ATTEMPT_S = 0.05  # never start an attempt with less time than this (or the timeout, if smaller) left


class PolicyError(ValueError):
    """Impossible or malformed policy; the message names the parameter."""


def _num(value):
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class Policy:
    """Validated policy options (see module docs)."""

    def __init__(self, initial_delay=0.0, interval=1.0, timeout=5.0, success_threshold=3, failure_threshold=None,
                 deadline=60.0, latency_percentile=None, timeline_limit=100):
        self.initial_delay = initial_delay
        self.interval = interval
        self.timeout = timeout
        self.success_threshold = success_threshold
        self.failure_threshold = failure_threshold
        self.deadline = deadline
        self.latency_percentile = latency_percentile
        self.timeline_limit = timeline_limit
        self.validate()

    @classmethod
    def from_params(cls, params):
        keys = ('initial_delay', 'interval', 'timeout', 'success_threshold', 'failure_threshold', 'deadline',
                'latency_percentile', 'timeline_limit')
        return cls(**dict((k, params[k]) for k in keys if k in params))

    def validate(self):
        def bad(option, expected, got):
            raise PolicyError('%s: expected %s, got %s' % (option, expected, got))

        for option in ('interval', 'timeout', 'deadline'):
            value = getattr(self, option)
            if value is None or value <= 0:
                bad(option, 'a number of seconds > 0', _num(value))
        if self.initial_delay is None or self.initial_delay < 0:
            bad('initial_delay', 'a number of seconds >= 0', _num(self.initial_delay))
        if self.success_threshold is None or self.success_threshold < 1:
            bad('success_threshold', 'an integer >= 1 (consecutive successful attempts required)', self.success_threshold)
        if self.failure_threshold is not None and self.failure_threshold < 1:
            bad('failure_threshold', 'an integer >= 1 (consecutive failed attempts that stop the gate) or no value', self.failure_threshold)
        if self.timeline_limit is None or self.timeline_limit < 0:
            bad('timeline_limit', 'an integer >= 0', self.timeline_limit)
        if self.latency_percentile is not None:
            pct = self.latency_percentile.get('percentile')
            max_ms = self.latency_percentile.get('max_ms')
            if pct is None or not 0 < pct <= 100:
                bad('latency_percentile.percentile', 'a percentile in (0, 100], such as 95', _num(pct))
            if max_ms is None or max_ms <= 0:
                bad('latency_percentile.max_ms', 'a latency in milliseconds > 0', _num(max_ms))
        floor = self.initial_delay + (self.success_threshold - 1) * self.interval
        if self.deadline <= floor:
            raise PolicyError(
                'deadline: expected more than initial_delay + (success_threshold - 1) * interval = %s + %d * %s = %ss '
                '(the earliest the last required attempt can start), got %ss; this policy can never pass: raise deadline '
                'or lower initial_delay, interval or success_threshold'
                % (_num(self.initial_delay), self.success_threshold - 1, _num(self.interval), _num(round(floor, 3)), _num(self.deadline)))


def percentile(values, pct):
    """Nearest-rank percentile (the smallest value with at least pct% of values <= it)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, int(math.ceil(pct / 100.0 * len(ordered))))
    return ordered[min(rank, len(ordered)) - 1]


def iso(ts):
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec='milliseconds').replace('+00:00', 'Z')


class HealthGate:
    """Run probes under a Policy.  ``run()`` returns the result dict of the module."""

    def __init__(self, probes, policy, clock=time.monotonic, sleep=time.sleep, wallclock=time.time):
        self.probes = probes
        self.policy = policy
        self.clock = clock
        self.sleep = sleep
        self.wallclock = wallclock

    # ------------------------------------------------------------------ loop

    def run(self):
        policy = self.policy
        for probe in self.probes:
            probe.reset()
        t0 = self.clock()
        wall0 = self.wallclock()
        deadline_at = t0 + policy.deadline
        min_attempt = min(policy.timeout, MIN_ATTEMPT_S)
        timeline = []
        history = dict((p.name, []) for p in self.probes)  # name -> [(attempt, ProbeResult)]
        streak = best_streak = fails_in_row = 0
        attempts = 0
        reason = None
        reason_kind = None
        next_start = t0 + policy.initial_delay
        while True:
            now = self.clock()
            start = max(next_start, now)
            needed = policy.success_threshold - streak
            last_possible = deadline_at - min_attempt
            if start + (needed - 1) * policy.interval > last_possible:
                reason_kind = 'deadline'
                if start > last_possible:
                    reason = 'deadline of %ss reached' % _num(policy.deadline)
                else:
                    reason = ('deadline of %ss: %d more consecutive successful attempt(s) needed, which cannot finish in the %.3gs left'
                              % (_num(policy.deadline), needed, max(0.0, deadline_at - now)))
                break
            if start > now:
                self.sleep(start - now)
            attempts += 1
            entry = self._attempt(attempts, t0, wall0, deadline_at, history)
            if entry['outcome'] == 'ok':
                streak += 1
                fails_in_row = 0
            else:
                streak = 0
                fails_in_row += 1
            best_streak = max(best_streak, streak)
            entry['streak'] = streak
            timeline.append(entry)
            if streak >= policy.success_threshold:
                reason = self._check_percentile(history)
                if reason:
                    reason_kind = 'latency_percentile'
                break
            if policy.failure_threshold is not None and fails_in_row >= policy.failure_threshold:
                reason_kind = 'failure_threshold'
                reason = '%d consecutive failed attempt(s) reached failure_threshold %d' % (fails_in_row, policy.failure_threshold)
                break
            next_start = entry['_start'] + policy.interval

        elapsed = round(self.clock() - t0, 3)
        passed = reason is None
        for item in timeline:
            item.pop('_start', None)
        dropped = max(0, len(timeline) - policy.timeline_limit)
        result = {
            'passed': passed,
            'attempts': attempts,
            'elapsed': elapsed,
            'streak': streak,
            'best_streak': best_streak,
            'timeline': timeline[dropped:],
            'timeline_dropped': dropped,
            'stats': self.stats(history),
        }
        if policy.latency_percentile:
            pct = policy.latency_percentile['percentile']
            result['latency_percentile'] = dict(
                percentile=pct, max_ms=policy.latency_percentile['max_ms'],
                values=dict((name, percentile([r.latency_ms for _a, r in items if r.ok], pct)) for name, items in history.items()))
        if passed:
            result['msg'] = ('health gate passed: %d consecutive successful attempt(s) (success_threshold %d) of %d probe(s), '
                             '%d attempt(s) in %.3fs' % (streak, policy.success_threshold, len(self.probes), attempts, elapsed))
        else:
            result['reason'] = reason_kind
            result['msg'] = self._failure_message(reason, reason_kind, history, attempts, best_streak, elapsed)
        return result

    def _attempt(self, number, t0, wall0, deadline_at, history):
        start = self.clock()
        entry = {'attempt': number, 'timestamp': iso(wall0 + (start - t0)), 'offset_s': round(start - t0, 3),
                 'outcome': 'ok', 'probes': [], '_start': start}
        for probe in self.probes:
            p_start = self.clock()
            left = deadline_at - p_start
            timeout = min(probe.timeout or self.policy.timeout, left)
            if timeout <= 0.001:
                result = ProbeResult(False, latency_ms=0.0, error='not run: the deadline was reached during this attempt')
            else:
                result = probe.run(timeout)
            history[probe.name].append((number, result))
            item = {
                'name': probe.name, 'kind': probe.kind, 'timestamp': iso(wall0 + (p_start - t0)),
                'outcome': 'ok' if result.ok else 'fail', 'latency_ms': result.latency_ms, 'status': result.status,
                'error': result.error,
            }
            if result.detail:
                item['detail'] = result.detail
            if not result.ok:
                entry['outcome'] = 'fail'
                if result.excerpt:
                    item['excerpt'] = result.excerpt
            entry['probes'].append(item)
        return entry

    def _check_percentile(self, history):
        spec = self.policy.latency_percentile
        if not spec:
            return None
        for probe in self.probes:
            values = [r.latency_ms for _a, r in history[probe.name] if r.ok]
            value = percentile(values, spec['percentile'])
            if value is not None and value > spec['max_ms']:
                return ('%s: expected p%s latency <= %s ms (latency_percentile), got %.1f ms over %d successful result(s)'
                        % (probe.label(), _num(spec['percentile']), _num(spec['max_ms']), value, len(values)))
        return None

    # ------------------------------------------------------------------ reporting

    def stats(self, history):
        out = {}
        for probe in self.probes:
            items = history[probe.name]
            ok_lat = [r.latency_ms for _a, r in items if r.ok]
            out[probe.name] = {
                'kind': probe.kind,
                'target': probe.describe(),
                'count': len(items),
                'ok': len(ok_lat),
                'fail': len(items) - len(ok_lat),
                'latency_ms': {
                    'min': min(ok_lat) if ok_lat else None,
                    'p50': percentile(ok_lat, 50),
                    'p95': percentile(ok_lat, 95),
                    'p99': percentile(ok_lat, 99),
                    'max': max(ok_lat) if ok_lat else None,
                },
            }
        return out

    def _failure_message(self, reason, reason_kind, history, attempts, best_streak, elapsed):
        head = 'health gate failed after %d attempt(s) in %.3fs (best streak %d of %d required): ' % (
            attempts, elapsed, best_streak, self.policy.success_threshold)
        if reason_kind == 'latency_percentile':
            return head + reason
        head += reason
        failures = self.explain_failures(history, attempts)
        if failures:
            return head + '; ' + '; '.join(failures)
        if attempts == 0:
            return head + '; no attempt could be made'
        return head

    def explain_failures(self, history, attempts):
        """One sentence per probe that failed in the most recent failed attempt."""
        last_failed = 0
        for items in history.values():
            for number, result in items:
                if not result.ok:
                    last_failed = max(last_failed, number)
        if not last_failed:
            return []
        sentences = []
        for probe in self.probes:
            by_attempt = dict(history[probe.name])
            last = by_attempt.get(last_failed)
            if last is None or last.ok:
                continue
            run = 0
            number = last_failed
            while number in by_attempt and not by_attempt[number].ok:
                run += 1
                number -= 1
            if run > 1:
                when = 'on %d consecutive attempts' % run
            elif last_failed == attempts:
                when = 'on the last attempt (%d)' % last_failed
            else:
                when = 'on attempt %d' % last_failed
            text = '%s: %s %s' % (probe.label(), last.error or 'failed', when)
            if last.status is not None and str(last.status) not in (last.error or ''):
                text += ' (status %s)' % last.status
            if last.excerpt:
                text += '; last response: %s' % last.excerpt
            sentences.append(text)
        return sentences
