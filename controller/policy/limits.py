"""A policy's ``windowLimits``: how long and how broad a window may be to admit under it.

Without limits a ChangeWindow can be a 100-year one-off, a cron that is always open, or a
target of every resource in every namespace -- each formally "approved", none a work plan a
regulator would recognise. A policy opts in to limits; they are checked

- when a window is created or changed (``validation`` refuses it, naming the limit), and
- at every decision (``decide``: a window that breaks a limit -- one added to the policy
  later, or a selector that now matches more namespaces -- admits nothing under the policy).

Everything here is a pure function of the window, the limits and the namespaces the window
covers now, so the answer can be memoised per (window, policy) in a snapshot.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable

from controller.model import crds
from controller.policy import matching, schedules

SAMPLED_OPENINGS = 10
"""How many openings of a recurring window are measured for ``maxDuration`` (back-to-back
occurrences merge into one stretch, so ``duration`` alone does not bound it)."""

_REFERENCE = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
"""Where sampling starts when a window has neither notBefore nor a creation time: any fixed
instant keeps the answer the same on every replica and at every decision."""


def violations(
    limits: crds.WindowLimits, window: crds.ChangeWindow, *, covered: Callable[[], set[str]]
) -> list[str]:
    """One sentence per broken limit (empty: the window is within ``limits``).

    ``covered`` returns the namespaces the window covers now; it is only called when
    ``maxNamespaces`` is set.
    """
    found: list[str] = []
    schedule = window.spec.schedule
    if limits.max_duration is not None:
        longest = longest_stretch(window)
        limit = crds.format_duration(limits.max_duration)
        if longest is None:
            found.append(f"the window is open without end, beyond maxDuration {limit}")
        elif longest > limits.max_duration:
            found.append(
                f"the window stays open {crds.format_duration(longest)} at a stretch,"
                f" more than maxDuration {limit}"
            )
    if limits.max_lifetime is not None:
        limit = crds.format_duration(limits.max_lifetime)
        one_off = schedule.one_off
        if one_off is not None:
            life: datetime.timedelta | None = one_off.end - one_off.start
        elif schedule.not_before is not None and schedule.not_after is not None:
            life = schedule.not_after - schedule.not_before
        else:
            life = None
        if life is None:
            found.append(
                f"a recurring window needs notBefore and notAfter under maxLifetime {limit}"
            )
        elif life > limits.max_lifetime:
            found.append(
                f"the window spans {crds.format_duration(life)}, more than maxLifetime {limit}"
            )
    if not limits.allow_wildcards:
        found.extend(wildcards(window))
    if limits.max_namespaces is not None:
        if any(matching.selector_is_empty(t.namespace_selector) for t in window.spec.targets):
            found.append(
                f"namespaceSelector {{}} covers every namespace, more than maxNamespaces"
                f" {limits.max_namespaces}"
            )
        else:
            n = len(covered())
            if n > limits.max_namespaces:
                found.append(
                    f"the window covers {n} namespaces, more than maxNamespaces {limits.max_namespaces}"
                )
    return found


def wildcards(window: crds.ChangeWindow) -> list[str]:
    """The wildcards in a window's targets, each named by its field path."""
    found: list[str] = []
    for i, target in enumerate(window.spec.targets):
        for j, rule in enumerate(target.resources):
            where = f"spec.targets[{i}].resources[{j}]"
            if "*" in rule.api_groups:
                found.append(f'{where}.apiGroups has "*"')
            if any("*" in r for r in rule.resources):
                found.append(f"{where}.resources has a wildcard")
            if crds.Operation.ALL in rule.operations:
                found.append(f'{where}.operations has "*"')
        if matching.selector_is_empty(target.namespace_selector):
            found.append(f"spec.targets[{i}].namespaceSelector {{}} selects every namespace")
    return found


def longest_stretch(window: crds.ChangeWindow) -> datetime.timedelta | None:
    """The longest the window stays open at once; None when some opening never ends.

    One-off: ``end - start``. Recurring: the longest of its first ``SAMPLED_OPENINGS``
    openings (occurrences merged as the decision merges them) from notBefore, else from the
    window's creation time.
    """
    schedule = window.spec.schedule
    one_off = schedule.one_off
    if one_off is not None:
        return one_off.end - one_off.start
    recurring = schedule.recurring
    if recurring is None:
        return None
    timeline = schedules.from_schedule(recurring)
    t = recurring.not_before or window.metadata.creation_timestamp or _REFERENCE
    longest = recurring.duration
    current = timeline.interval_at(t)
    if current is not None:
        longest = max(longest, current.end - current.start)
        t = current.end
    for _ in range(SAMPLED_OPENINGS):
        upcoming = timeline.next_interval(t)
        if upcoming is None:
            if timeline.interval_at(t) is not None:
                return None  # open at t with no known end: an always-open cron
            break
        longest = max(longest, upcoming.end - upcoming.start)
        t = upcoming.end
    return longest
