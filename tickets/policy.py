"""The operator's rules the work-order operations follow (tickets, calendar and exchange
settings), as one value handed to every operation and to what follows a move."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from core.config import Calendar, Exchange, Hotline, Settings, Tickets
from tickets.workcalendar import WorkCalendar, load_calendar

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

    def calendar(self, session: Session) -> WorkCalendar:
        return load_calendar(session, self.timezone, self.working_hours)


DEFAULT_POLICY = Policy()
