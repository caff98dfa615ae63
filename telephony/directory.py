"""The telephony directory: queues and agent phones, the one source the PBX config is built from.

Adapters (CLI, web, the config renderer) call these functions; none of them touch the tables.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session, selectinload

from core.errors import HotlineError
from telephony.models import Agent, CallQueue, QueueMember

STRATEGIES = ("ringall", "leastrecent", "fewestcalls", "random", "rrmemory", "linear", "wrandom")
_NUMBER = re.compile(r"[0-9]{2,20}")
_QUEUE = re.compile(r"[a-z0-9][a-z0-9_-]{1,39}")
# Each agent's second endpoint, the desk page's softphone (WebRTC): <number>-webrtc.
BROWSER_SUFFIX = "-webrtc"
_CONTACT = re.compile(r"sip:[0-9A-Za-z._-]+@[0-9A-Za-z.\[\]:-]+")


class DirectoryError(HotlineError):
    """A directory change that cannot be made as asked."""


@dataclass(frozen=True)
class AgentPhone:
    number: str
    name: str
    sip_password: str
    static_contact: str | None

    @property
    def static_host(self) -> str | None:
        """The IP of a static contact, used to recognise requests the phone sends."""
        if not self.static_contact:
            return None
        host = self.static_contact.split("@", 1)[1]
        return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


@dataclass(frozen=True)
class QueueSpec:
    name: str
    title: str
    strategy: str
    ring_seconds: int
    retry_seconds: int
    wrapup_seconds: int
    max_waiting: int
    members: tuple[tuple[str, int], ...]  # (agent number, penalty)


@dataclass(frozen=True)
class Directory:
    queues: tuple[QueueSpec, ...]
    agents: tuple[AgentPhone, ...]


def ensure_queue(session: Session, name: str, title: str | None = None, **options: int | str
                 ) -> CallQueue:
    """Create the queue if it does not exist; an existing one is left as it is."""
    if not _QUEUE.fullmatch(name) or name == "general":  # [general] is queues.conf's own
        raise DirectoryError(
            f"queue name {name!r}: 2-40 lower-case letters, digits, - or _, not 'general'")
    queue = session.scalar(select(CallQueue).where(CallQueue.name == name))
    if queue is not None:
        return queue
    strategy = str(options.get("strategy", "rrmemory"))
    if strategy not in STRATEGIES:
        raise DirectoryError(f"queue strategy {strategy!r}: one of {', '.join(STRATEGIES)}")
    queue = CallQueue(name=name, title=title or name, **options)
    session.add(queue)
    session.flush()
    return queue


def add_agent(session: Session, number: str, name: str, *, static_contact: str | None = None,
              queues: tuple[str, ...] = (), penalty: int = 0) -> Agent:
    if not _NUMBER.fullmatch(number):
        raise DirectoryError(f"agent number {number!r}: 2-20 digits")
    if not name.strip() or len(name) > 100 or any(ord(c) < 32 for c in name):
        raise DirectoryError("agent name: 1-100 printable characters")
    if static_contact is not None and not _CONTACT.fullmatch(static_contact):
        raise DirectoryError(f"agent contact {static_contact!r}: like sip:8001@127.0.0.3:5060")
    if session.scalar(select(Agent).where(Agent.number == number)) is not None:
        raise DirectoryError(f"agent {number} already exists")
    agent = Agent(number=number, name=name.strip(), static_contact=static_contact,
                  sip_password=secrets.token_urlsafe(12))
    session.add(agent)
    session.flush()
    for queue_name in queues:
        queue = session.scalar(select(CallQueue).where(CallQueue.name == queue_name))
        if queue is None:
            raise DirectoryError(f"queue {queue_name!r} does not exist")
        session.add(QueueMember(queue=queue, agent=agent, penalty=penalty))
    session.flush()
    return agent


def sip_password(session: Session, number: str) -> str:
    """The SIP digest password of agent `number`'s desk phone and browser softphone."""
    agent = session.scalar(select(Agent).where(Agent.number == number))
    if agent is None:
        raise DirectoryError(f"agent {number} does not exist")
    return agent.sip_password


def rotate_sip_password(session: Session, number: str) -> str:
    """A new generated password for agent `number` (the old one stops working once the PBX
    configuration is rendered and reloaded)."""
    agent = session.scalar(select(Agent).where(Agent.number == number))
    if agent is None:
        raise DirectoryError(f"agent {number} does not exist")
    agent.sip_password = secrets.token_urlsafe(12)
    session.flush()
    return agent.sip_password


def remove_agent(session: Session, number: str) -> None:
    agent = session.scalar(select(Agent).where(Agent.number == number))
    if agent is None:
        raise DirectoryError(f"agent {number} does not exist")
    session.delete(agent)
    session.flush()


def queue_title(session: Session, name: str) -> str:
    """A queue's title as people read it (综合受理), or its name if there is no such queue."""
    # built once: every screen pop asks
    title = session.connection().execute(_TITLE, {"name": name}).scalar() if name else None
    return title or name


_TITLE = select(CallQueue.title).where(CallQueue.name == bindparam("name"))


def snapshot(session: Session) -> Directory:
    """Everything the PBX configuration needs, in a stable order."""
    queues = session.scalars(
        select(CallQueue).options(selectinload(CallQueue.members).selectinload(QueueMember.agent))
        .order_by(CallQueue.name)
    ).all()
    agents = session.scalars(select(Agent).order_by(Agent.number)).all()
    return Directory(
        queues=tuple(
            QueueSpec(
                name=q.name, title=q.title, strategy=q.strategy, ring_seconds=q.ring_seconds,
                retry_seconds=q.retry_seconds, wrapup_seconds=q.wrapup_seconds,
                max_waiting=q.max_waiting,
                members=tuple(sorted((m.agent.number, m.penalty) for m in q.members)),
            )
            for q in queues
        ),
        agents=tuple(
            AgentPhone(number=a.number, name=a.name, sip_password=a.sip_password,
                       static_contact=a.static_contact)
            for a in agents
        ),
    )
