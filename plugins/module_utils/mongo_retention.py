# -*- coding: utf-8 -*-
# Copyright (c) nodeops.stack maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Grandfather-father-son retention as a pure function over ``(name, datetime, verified)``.

Rules (the restic/borg "keep the last N periods that have a backup" reading):

* Only verified backups fill slots. Periods are UTC calendar days, ISO weeks
  (Monday to Sunday), calendar months and calendar years.
* ``daily`` N: the newest verified backup of each of the N most recent days
  that have a verified backup. ``weekly``, ``monthly`` and ``yearly`` likewise
  per ISO week, month and year. The rules are independent: a backup can be
  kept for several reasons, and all of them are reported.
* The newest verified backup is always kept (reason ``newest``), whatever the
  counts, so pruning can never leave no restorable backup behind.
* Backups that are not verified never fill a slot. They are pruned with
  reason ``unverified`` when ``prune_unverified`` is true, otherwise kept with
  reason ``unverified``.
* ``protect`` names backups that are kept whatever the rules say (reason
  ``protected``), e.g. the target of the ``latest`` pointer.
* With no verified backup at all nothing verified exists to keep, and only the
  unverified rule applies.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type  # pylint: disable=invalid-name

import datetime

RULES = ('daily', 'weekly', 'monthly', 'yearly')
DEFAULTS = {'daily': 7, 'weekly': 4, 'monthly': 3, 'yearly': 0}


def _utc(dt):
    if dt.tzinfo is None:
        return dt.replace(tzinfo=datetime.timezone.utc)
    return dt.astimezone(datetime.timezone.utc)


def _period(rule, dt):
    if rule == 'daily':
        return dt.date()
    if rule == 'weekly':
        iso_year, iso_week, _weekday = dt.isocalendar()
        return (iso_year, iso_week)
    if rule == 'monthly':
        return (dt.year, dt.month)
    return dt.year


def plan_retention(backups, daily=7, weekly=4, monthly=3, yearly=0, prune_unverified=False, protect=()):
    """Decide which backups to keep.

    ``backups``: iterable of ``(name, datetime, verified)``. Returns
    ``{'keep': [{'name', 'time', 'reasons'}], 'prune': [{'name', 'time', 'reason'}]}``,
    both newest first. Raises ValueError for negative counts or duplicate names.
    """
    counts = {'daily': daily, 'weekly': weekly, 'monthly': monthly, 'yearly': yearly}
    for rule, count in counts.items():
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ValueError('keep_%s: expected an integer >= 0, got %r' % (rule, count))
    items = []
    seen = set()
    for name, when, verified in backups:
        if name in seen:
            raise ValueError('duplicate backup name %r' % name)
        seen.add(name)
        items.append((name, _utc(when), bool(verified)))
    items.sort(key=lambda item: (item[1], item[0]), reverse=True)
    reasons = dict((name, []) for name, _when, _verified in items)
    verified_items = [item for item in items if item[2]]
    if verified_items:
        reasons[verified_items[0][0]].append('newest')
    for rule in RULES:
        periods = set()
        for name, when, _verified in verified_items:
            if len(periods) >= counts[rule]:
                break
            key = _period(rule, when)
            if key in periods:
                continue
            periods.add(key)
            reasons[name].append(rule)
    protected = set(protect or ())
    keep, prune = [], []
    for name, when, verified in items:
        why = reasons[name]
        if name in protected and 'protected' not in why:
            why.append('protected')
        if not verified and not why:
            if prune_unverified:
                prune.append({'name': name, 'time': when, 'reason': 'unverified'})
            else:
                keep.append({'name': name, 'time': when, 'reasons': ['unverified']})
            continue
        if why:
            keep.append({'name': name, 'time': when, 'reasons': why})
        else:
            prune.append({'name': name, 'time': when, 'reason': 'outside the retention policy (%s)' % ', '.join(
                '%d %s' % (counts[r], r) for r in RULES)})
    return {'keep': keep, 'prune': prune}
