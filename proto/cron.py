"""CronJob schedules: the one place that checks a `spec.schedule` and says when it fires.

Kubernetes reads schedules with robfig/cron's standard parser: exactly five
fields (minute, hour, day of month, month, day of week; `*`, lists, ranges,
steps, month and weekday names, `?` for either day) or a macro (`@yearly`,
`@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly`). `parse`
accepts exactly that, and its `ScheduleError`s read as robfig's do (the
apiserver puts them in `spec.schedule: Invalid value: ...`), since croniter on
its own is more lenient (six fields, seconds, `7` for Sunday). The arithmetic
(next times, in a time zone across DST) is croniter's.

The apiserver validates with this; the CronJob controller schedules with it.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterator
from dataclasses import dataclass

from croniter import croniter  # type: ignore[import-untyped]

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_MONTHS = {m: i + 1 for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct",
                                           "nov", "dec"))}
_WEEKDAYS = {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}


@dataclass(frozen=True)
class _Bounds:
    low: int
    high: int
    names: dict[str, int]


# minute, hour, day of month, month, day of week — robfig's bounds (Sunday is 0 only).
_FIELDS = (_Bounds(0, 59, {}), _Bounds(0, 23, {}), _Bounds(1, 31, {}), _Bounds(1, 12, _MONTHS),
           _Bounds(0, 6, _WEEKDAYS))


class ScheduleError(ValueError):
    """A schedule robfig/cron would refuse; the message is robfig's."""


def _int(text: str, expr: str, names: dict[str, int]) -> int:
    if text.lower() in names:
        return names[text.lower()]
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise ScheduleError(f'failed to parse int from {text}: strconv.Atoi: parsing "{text}": invalid syntax')
    value = int(text)
    if value < 0:
        raise ScheduleError(f"negative number ({value}) not allowed: {expr}")
    return value


def _check_range(expr: str, bounds: _Bounds) -> None:
    """One comma-separated part of a field: `*`, `?`, `N`, `N-M`, each optionally `/STEP`."""
    range_and_step = expr.split("/")
    if len(range_and_step) > 2:
        raise ScheduleError(f"too many slashes: {expr}")
    low_and_high = range_and_step[0].split("-")
    if len(low_and_high) > 2:
        raise ScheduleError(f"too many hyphens: {expr}")
    if low_and_high[0] in ("*", "?"):
        start, end = bounds.low, bounds.high
    else:
        start = _int(low_and_high[0], expr, bounds.names)
        if len(low_and_high) == 2:
            end = _int(low_and_high[1], expr, bounds.names)
        else:  # `N/STEP` runs from N to the field's maximum
            end = bounds.high if len(range_and_step) == 2 else start
    if len(range_and_step) == 2:
        step = _int(range_and_step[1], expr, {})
        if step <= 0:
            raise ScheduleError(f"step of range should be a positive number: {expr}")
    if start < bounds.low:
        raise ScheduleError(f"beginning of range ({start}) below minimum ({bounds.low}): {expr}")
    if end > bounds.high:
        raise ScheduleError(f"end of range ({end}) above maximum ({bounds.high}): {expr}")
    if start > end:
        raise ScheduleError(f"beginning of range ({start}) beyond end of range ({end}): {expr}")


def _normalise(schedule: str) -> str:
    """The five-field form of `schedule`, or ScheduleError as robfig words it."""
    spec = schedule.strip()
    if not spec:
        raise ScheduleError("empty spec string")
    if spec.startswith("@"):
        macro = MACROS.get(spec)
        if macro is None:
            raise ScheduleError(f"unrecognized descriptor: {spec}")
        return macro
    fields = spec.split()
    if len(fields) != 5:
        raise ScheduleError(f"expected exactly 5 fields, found {len(fields)}: [{' '.join(fields)}]")
    for text, bounds in zip(fields, _FIELDS, strict=True):
        for part in text.split(","):
            _check_range(part, bounds)
    # croniter has no `?`; it means "any" (only useful in one of the two day fields).
    return " ".join("*" if f == "?" else f for f in fields)


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule; times are aware datetimes, read in the zone they are given in."""

    expression: str  # five fields

    def next_after(self, after: _dt.datetime) -> _dt.datetime:
        """The first time strictly after `after` (in `after`'s zone) the schedule fires."""
        result: _dt.datetime = croniter(self.expression, after).get_next(_dt.datetime)
        return result

    def times(self, after: _dt.datetime, until: _dt.datetime) -> Iterator[_dt.datetime]:
        """Every firing time in (after, until], oldest first."""
        it = croniter(self.expression, after)
        while (t := it.get_next(_dt.datetime)) <= until:
            yield t

    def most_recent(self, after: _dt.datetime, until: _dt.datetime, *, limit: int = 100
                    ) -> tuple[_dt.datetime | None, int]:
        """The last firing time in (after, until] (None if none) and how many there were, up to limit + 1.

        A controller that was down for a year must not walk half a million minutes to
        find the one run it should start now: the count stops past `limit`.
        """
        missed = sum(1 for _ in zip(self.times(after, until), range(limit + 1), strict=False))
        if missed == 0:
            return None, 0
        before: _dt.datetime = croniter(self.expression, until).get_prev(_dt.datetime)
        # Through UTC, so the zone's own rules set `fold` (croniter may leave a stray one).
        before = before.astimezone(_dt.UTC).replace(fold=0).astimezone(until.tzinfo)
        at = self.next_after(before)  # `until` itself, when it is a firing time
        return (at if at <= until else before), missed


def parse(schedule: str) -> Schedule:
    """The schedule of `spec.schedule`; ScheduleError says what is wrong, as Kubernetes would."""
    return Schedule(_normalise(schedule))
