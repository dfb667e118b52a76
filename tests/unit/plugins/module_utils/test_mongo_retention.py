"""GFS retention over a fixed 400-day calendar; the expected sets are written out by hand (see the calendar notes).

Calendar facts used (checked with `cal`): 2025-01-01 is a Wednesday, 2026-01-01 a Thursday, so ISO week 2026-W01 runs
Mon 2025-12-29 .. Sun 2026-01-04, W02 Jan 5-11, W03 Jan 12-18, W04 Jan 19-25, W05 Jan 26 - Feb 1, W06 Feb 2-8;
2025-W52 is Dec 22-28.
"""

import datetime

import pytest

from ansible_collections.nodeops.stack.plugins.module_utils.mongo_retention import plan_retention

UTC = datetime.timezone.utc
FIRST = datetime.date(2025, 1, 1)
LAST = datetime.date(2026, 2, 4)  # 400 days: FIRST .. LAST
MISSING = {'2026-02-02', '2026-01-25', '2025-12-31', '2025-11-30', '2025-06-30'} | {'2026-01-%02d' % d for d in range(12, 19)}
UNVERIFIED = {'2026-02-04', '2026-01-31', '2026-01-04', '2025-12-30', '2025-03-31'}


def calendar():
    """Daily 02:00 UTC backups over 400 days, some days missing, some unverified, plus a second backup on 2026-01-29 at 14:00."""
    backups = []
    day = FIRST
    while day <= LAST:
        iso = day.isoformat()
        if iso not in MISSING:
            when = datetime.datetime(day.year, day.month, day.day, 2, 0, tzinfo=UTC)
            backups.append((when.strftime('%Y%m%dT%H%M%SZ'), when, iso not in UNVERIFIED))
        day += datetime.timedelta(days=1)
    backups.append(('20260129T140000Z', datetime.datetime(2026, 1, 29, 14, 0, tzinfo=UTC), True))
    return backups


def kept_map(plan):
    return {k['name']: k['reasons'] for k in plan['keep']}


def test_calendar_shape():
    backups = calendar()
    assert (LAST - FIRST).days + 1 == 400
    assert len(backups) == 400 - len(MISSING) + 1 == 389
    assert sum(1 for b in backups if not b[2]) == 5


def test_runbook_policy_7_daily_4_weekly_3_monthly_plus_2_yearly():
    plan = plan_retention(calendar(), daily=7, weekly=4, monthly=3, yearly=2, prune_unverified=True)
    assert kept_map(plan) == {
        '20260203T020000Z': ['newest', 'daily', 'weekly', 'monthly', 'yearly'],  # 02-04 is newer but unverified
        '20260201T020000Z': ['daily', 'weekly'],  # 02-02 missing; newest of W05
        '20260130T020000Z': ['daily', 'monthly'],  # 01-31 unverified, so the newest verified of January
        '20260129T140000Z': ['daily'],  # the later of the two backups of 01-29
        '20260128T020000Z': ['daily'],
        '20260127T020000Z': ['daily'],
        '20260126T020000Z': ['daily'],
        '20260124T020000Z': ['weekly'],  # W04: Sunday 01-25 missing
        '20260111T020000Z': ['weekly'],  # W03 has no backup at all and does not count; W02's newest
        '20251229T020000Z': ['monthly', 'yearly'],  # December: 12-31 missing, 12-30 unverified
    }
    pruned = {p['name']: p['reason'] for p in plan['prune']}
    assert len(pruned) == 389 - 10
    assert {n for n, r in pruned.items() if r == 'unverified'} == {
        '20260204T020000Z', '20260131T020000Z', '20260104T020000Z', '20251230T020000Z', '20250331T020000Z'}
    assert pruned['20260129T020000Z'].startswith('outside the retention policy (7 daily, 4 weekly, 3 monthly, 2 yearly)')
    assert [k['name'] for k in plan['keep']] == sorted(kept_map(plan), reverse=True)  # newest first


def test_long_weekly_and_monthly_chains_keep_unverified():
    plan = plan_retention(calendar(), daily=3, weekly=6, monthly=14, yearly=0, prune_unverified=False)
    assert kept_map(plan) == {
        '20260204T020000Z': ['unverified'],
        '20260203T020000Z': ['newest', 'daily', 'weekly', 'monthly'],
        '20260201T020000Z': ['daily', 'weekly'],
        '20260131T020000Z': ['unverified'],
        '20260130T020000Z': ['daily', 'monthly'],
        '20260124T020000Z': ['weekly'],
        '20260111T020000Z': ['weekly'],
        '20260104T020000Z': ['unverified'],
        '20260103T020000Z': ['weekly'],  # 2026-W01 spans the new year; Sunday 01-04 is unverified
        '20251230T020000Z': ['unverified'],
        '20251229T020000Z': ['monthly'],
        '20251228T020000Z': ['weekly'],  # 2025-W52
        '20251129T020000Z': ['monthly'],  # 11-30 missing
        '20251031T020000Z': ['monthly'],
        '20250930T020000Z': ['monthly'],
        '20250831T020000Z': ['monthly'],
        '20250731T020000Z': ['monthly'],
        '20250629T020000Z': ['monthly'],  # 06-30 missing
        '20250531T020000Z': ['monthly'],
        '20250430T020000Z': ['monthly'],
        '20250331T020000Z': ['unverified'],
        '20250330T020000Z': ['monthly'],  # 03-31 unverified
        '20250228T020000Z': ['monthly'],
        '20250131T020000Z': ['monthly'],  # the 14th month
    }
    assert len(plan['prune']) == 389 - 24


def test_zero_counts_still_keep_the_newest_verified_and_protected_backups():
    plan = plan_retention(calendar(), daily=0, weekly=0, monthly=0, yearly=0, prune_unverified=True, protect=['20250615T020000Z'])
    assert kept_map(plan) == {'20260203T020000Z': ['newest'], '20250615T020000Z': ['protected']}


def test_yearly_reaches_back_to_the_first_year():
    plan = plan_retention(calendar(), daily=0, weekly=0, monthly=0, yearly=5, prune_unverified=True)
    assert kept_map(plan) == {'20260203T020000Z': ['newest', 'yearly'], '20251229T020000Z': ['yearly']}


def test_no_verified_backup_at_all():
    backups = [(name, when, False) for name, when, _verified in calendar()[:5]]
    assert plan_retention(backups, prune_unverified=False)['prune'] == []
    assert [p['reason'] for p in plan_retention(backups, prune_unverified=True)['prune']] == ['unverified'] * 5


def test_naive_datetimes_are_utc_and_order_does_not_matter():
    backups = [('b', datetime.datetime(2026, 1, 2, 23, 59), True), ('a', datetime.datetime(2026, 1, 2, 0, 1), True),
               ('c', datetime.datetime(2026, 1, 3, 0, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=2))), True)]
    plan = plan_retention(backups, daily=1, weekly=0, monthly=0)
    # c is 2026-01-02T22:00Z: same UTC day as b, older than b
    assert kept_map(plan) == {'b': ['newest', 'daily']}


@pytest.mark.parametrize('kwargs,message', [
    ({'daily': -1}, 'keep_daily: expected an integer >= 0, got -1'),
    ({'weekly': 1.5}, 'keep_weekly: expected an integer >= 0, got 1.5'),
    ({'yearly': True}, 'keep_yearly: expected an integer >= 0, got True'),
])
def test_bad_counts(kwargs, message):
    with pytest.raises(ValueError) as info:
        plan_retention([], **kwargs)
    assert str(info.value) == message


def test_duplicate_names_are_refused():
    when = datetime.datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError):
        plan_retention([('x', when, True), ('x', when, True)])
