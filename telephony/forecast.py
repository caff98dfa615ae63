"""The staffing forecast (排班预测): agents needed per half-hour of a day against the agents
scheduled.

- Arrivals: the offered inbound calls (telephony.measures.offered_arrivals) of each of the
  last `weeks` same weekdays, counted per half-hour of the centre's local day and averaged.
- Handle time: the AHT (talk + wrap-up per answered call) of every call of those weeks
  (telephony.measures.call_measures), one figure for the day.
- Needed: Erlang C (telephony.erlang) for 80 % answered within 15 s.
- Scheduled: the setting `hotline.staffing_schedule` ("08:00-12:00=6,13:30-17:30=5", the
  same every day); without one, the agents logged in on those same weekdays, averaged
  (seat intervals, telephony.measures.seat_stretches).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from core.errors import HotlineError
from telephony import erlang, measures

SLOTS = 48  # half-hours in a day
MAX_WEEKS = 12
_ENTRY = re.compile(r"\s*(\d{2}):(\d{2})\s*-\s*(\d{2}):(\d{2})\s*=\s*(\d{1,4})\s*")


class StaffingError(HotlineError):
    status = 400


def parse_schedule(text: str) -> list[int] | None:
    """Agents per half-hour (48 figures) from "HH:MM-HH:MM=N, ..." (half-hour boundaries,
    24:00 ends the day; a later entry overrides an earlier one); None for ""."""
    if not text.strip():
        return None
    agents = [0] * SLOTS
    for part in text.split(","):
        found = _ENTRY.fullmatch(part)
        if found is None:
            raise StaffingError(f"staffing schedule: {part.strip()!r} is not HH:MM-HH:MM=N")
        h1, m1, h2, m2, n = (int(g) for g in found.groups())
        if m1 not in (0, 30) or m2 not in (0, 30) or h1 > 23 or h2 > 24 or (h2 == 24 and m2):
            raise StaffingError(f"staffing schedule: {part.strip()!r}: half-hours "
                                f"from 00:00 to 24:00")
        first, last = h1 * 2 + m1 // 30, h2 * 2 + m2 // 30
        if first >= last:
            raise StaffingError(f"staffing schedule: {part.strip()!r}: ends before it starts")
        agents[first:last] = [n] * (last - first)
    return agents


@dataclass(frozen=True)
class Slot:
    start: str  # "08:30", local time
    calls: float  # forecast arrivals
    erlangs: float | None
    needed: int | None  # None: no handle time known yet
    service_level: float | None
    asa_seconds: float | None
    scheduled: float
    short: float | None  # needed - scheduled, > 0: understaffed


@dataclass(frozen=True)
class Forecast:
    day: date
    weeks: int
    history: list[date]
    aht_seconds: float | None
    schedule_from: str  # "setting" | "logins"
    target_level: float
    target_seconds: float
    slots: list[Slot]


def _slot(moment: datetime, zone: ZoneInfo) -> int:
    local = moment.astimezone(zone)
    return local.hour * 2 + local.minute // 30


def _day_window(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    return (datetime.combine(day, time(0), zone),
            datetime.combine(day + timedelta(days=1), time(0), zone))


def forecast(session: Session, day: date, *, timezone: str, weeks: int = 4,
             schedule: str = "") -> Forecast:
    """The forecast for `day` from the `weeks` same weekdays before it."""
    if not 1 <= weeks <= MAX_WEEKS:
        raise StaffingError(f"weeks: 1 to {MAX_WEEKS}")
    zone = ZoneInfo(timezone)
    scheduled = parse_schedule(schedule)
    history = [day - timedelta(weeks=w) for w in range(weeks, 0, -1)]
    arrivals = [0] * SLOTS
    logged = [0.0] * SLOTS
    for past in history:
        start, end = _day_window(past, zone)
        for at in measures.offered_arrivals(session, start, end):
            arrivals[_slot(at, zone)] += 1
        if scheduled is None:
            for began, ended in measures.seat_stretches(session, start, end):
                _spread(logged, began, ended, start)
    first, _ = _day_window(history[0], zone)
    _, last = _day_window(history[-1], zone)
    aht = measures.call_measures(session, first, last).aht_seconds
    slots = []
    for index in range(SLOTS):
        calls = arrivals[index] / weeks
        staffed = float(scheduled[index]) if scheduled is not None else round(
            logged[index] / weeks / erlang.HALF_HOUR, 1)
        need = erlang.agents_needed(calls, aht) if aht else None
        if need is None and calls == 0:
            need = erlang.agents_needed(0, 1)
        slots.append(Slot(
            start=f"{index // 2:02d}:{index % 2 * 30:02d}", calls=round(calls, 2),
            erlangs=None if need is None else round(need.erlangs, 2),
            needed=None if need is None else need.agents,
            service_level=None if need is None else round(need.service_level, 4),
            asa_seconds=None if need is None or need.asa_seconds is None
            else round(need.asa_seconds, 1),
            scheduled=staffed,
            short=None if need is None else round(need.agents - staffed, 1)))
    return Forecast(day=day, weeks=weeks, history=history, aht_seconds=aht,
                    schedule_from="setting" if scheduled is not None else "logins",
                    target_level=erlang.TARGET_LEVEL, target_seconds=erlang.TARGET_SECONDS,
                    slots=slots)


def _spread(seconds: list[float], began: datetime, ended: datetime, midnight: datetime) -> None:
    """Add a logged-in stretch's seconds to the half-hours it covers (UTC offsets from the
    local midnight: a whole-hour zone's half-hours)."""
    at = began
    while at < ended:
        index = int((at - midnight).total_seconds() // erlang.HALF_HOUR)
        if not 0 <= index < SLOTS:
            break
        slot_end = midnight + timedelta(seconds=(index + 1) * erlang.HALF_HOUR)
        step = min(ended, slot_end)
        seconds[index] += (step - at).total_seconds()
        at = step
