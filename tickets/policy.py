"""The operator's rules the work-order operations follow (tickets, calendar and exchange
settings), as one value handed to every operation and to what follows a move."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from core.config import Calendar, Exchange, Hotline, Settings, Tickets
from tickets.in_force import InForce, RulesCache, read
from tickets.workcalendar import WorkCalendar, load_calendar

APP_KEY = "hotline.policy"  # a Flask app's extensions: its Policy
# The settings' own defaults (core.config declares each once); Policy() is the defaults.
_CALENDAR, _TICKETS, _HOTLINE, _EXCHANGE = Calendar(), Tickets(), Hotline(), Exchange()


@dataclass(frozen=True)
class Policy:
    """The operator's rules the work-order operations follow, from the settings."""

    timezone: str = _CALENDAR.timezone
    working_hours: str = _CALENDAR.working_hours
    yellow_percent: int = _TICKETS.yellow_percent
    duplicate_distance_m: int = _TICKETS.duplicate_distance_m
    duplicate_window_hours: int = _TICKETS.duplicate_window_hours
    repeat_window_hours: int = _HOTLINE.repeat_window_hours
    webhook_url: str = _EXCHANGE.webhook_url
    survey_after_workdays: int = _TICKETS.survey_after_workdays
    survey_hours: str = _TICKETS.survey_hours
    survey_call_attempts: int = _TICKETS.survey_call_attempts
    survey_retry_minutes: int = _TICKETS.survey_retry_minutes
    survey_sms_wait_hours: int = _TICKETS.survey_sms_wait_hours
    reopen_ratings: tuple[int, ...] = _TICKETS.reopen_ratings
    reopen_limit: int = _TICKETS.reopen_limit
    # the process's cache of the calendar and the limits (hotline.compose); without one,
    # every step reads them from the database
    rules: RulesCache | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        t = settings.tickets
        return cls(timezone=settings.calendar.timezone,
                   working_hours=settings.calendar.working_hours,
                   yellow_percent=t.yellow_percent, duplicate_distance_m=t.duplicate_distance_m,
                   duplicate_window_hours=t.duplicate_window_hours,
                   repeat_window_hours=settings.hotline.repeat_window_hours,
                   webhook_url=settings.exchange.webhook_url,
                   survey_after_workdays=t.survey_after_workdays, survey_hours=t.survey_hours,
                   survey_call_attempts=t.survey_call_attempts,
                   survey_retry_minutes=t.survey_retry_minutes,
                   survey_sms_wait_hours=t.survey_sms_wait_hours,
                   reopen_ratings=t.reopen_ratings, reopen_limit=t.reopen_limit)

    @classmethod
    def of_app(cls, extensions: Mapping[str, Any]) -> Policy:
        """The web app's policy (hotline.web keeps the process's one, with its rules cache),
        or one from its settings."""
        policy = extensions.get(APP_KEY)
        return policy if isinstance(policy, Policy) else cls.from_settings(
            extensions["hotline.settings"])

    def in_force(self, session: Session) -> InForce:
        """The work calendar and the time limits in force now."""
        if self.rules is None:
            return read(session, self.timezone, self.working_hours)
        return self.rules.get(session, self.timezone, self.working_hours)

    def calendar(self, session: Session) -> WorkCalendar:
        if self.rules is None:  # the calendar alone (the sweeper, the surveys)
            return load_calendar(session, self.timezone, self.working_hours)
        return self.rules.get(session, self.timezone, self.working_hours).calendar


DEFAULT_POLICY = Policy()
