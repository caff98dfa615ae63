"""The one composition of the hotline's parts: the database engine (migrated), its sessions,
Redis and the event bus their commits publish on, and the work-order policy, all from the
settings and one clock. The centre, the `hotline` command, the IVR and the demo each start
from `build`; the rooms get these parts as arguments and never import this module.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

import channels  # wires the survey's SMS step (tickets.surveys.send_sms_with), close notices
from core.clock import SYSTEM_CLOCK, Clock
from core.config import Settings
from core.db import make_engine, session_factory, transaction, upgrade
from core.events import EventBus, publish_on_commit
from core.live import connect_redis
from core.outbox import Relay
from tickets import catalogue
from tickets.in_force import RulesCache
from tickets.policy import Policy


@dataclass
class Parts:
    """What the hotline's processes run on. Redis is reached on first use only: a command
    that reads the database never starts the embedded server."""

    settings: Settings
    clock: Clock
    engine: Engine
    sessions: sessionmaker[Session]
    policy: Policy
    relay: Relay | None = None  # with `publish`: relays each commit's events (core.outbox)

    @cached_property
    def redis(self) -> redis.Redis:
        return connect_redis(self.settings)

    @cached_property
    def bus(self) -> EventBus:
        return EventBus(self.redis)


def build(settings: Settings, clock: Clock = SYSTEM_CLOCK, *, publish: bool = True,
          seed_catalogue: bool = False) -> Parts:
    """The parts for `settings`: the schema migrated to the latest revision; with `publish`,
    every committed change publishes its domain events on the bus right after its commit
    (so an order moved from the shell is seen by wallboards and desks too; without it they
    wait in the outbox for a relay, the centre's); with `seed_catalogue`, a fresh database
    gets the operator's catalogue file or the packaged one."""
    engine = make_engine(settings.storage.database_url)
    upgrade(engine)
    channels.notices.configure(settings.sms)  # whose citizens hear their order closed
    parts = Parts(settings, clock, engine, session_factory(engine),
                  Policy.from_settings(settings))
    if seed_catalogue:
        with transaction(parts.sessions) as session:
            catalogue.ensure_loaded(session, settings.tickets.catalogue_file)
    if publish:
        parts.relay = publish_on_commit(parts.sessions, parts.bus, clock)
        # a process on Redis keeps the calendar and the limits, asking Redis every step
        # whether they changed; one that never reaches Redis (a one-shot command reading
        # the database) reads them every step instead
        parts.policy = replace(parts.policy, rules=RulesCache(lambda: parts.redis))
    return parts
