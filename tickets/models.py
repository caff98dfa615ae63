"""Tables of the tickets room."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UtcDateTime
from telephony.models import CallRecord


class CalendarDay(Base):
    """The operator's entry for one day: a holiday, or a make-up working day (调休上班)."""

    __tablename__ = "calendar_days"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    day: Mapped[date] = mapped_column(Date, unique=True)
    workday: Mapped[bool] = mapped_column(Boolean)
    note: Mapped[str] = mapped_column(String(100), default="")


# A case number (案件编号) is YYYYMMDD and the day's count: 4 digits for the first 9,999
# orders of a local day, more on a day with more (a storm, a water cut).
CASE_NUMBER_LENGTH = 16


class CaseCounter(Base):
    """The last case number given out on one local day: the next opening that day takes
    the one after, by a single update of this row in its own transaction."""

    __tablename__ = "case_counters"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    last_number: Mapped[int] = mapped_column(Integer)


class WorkOrder(Base):
    """A work order (工单): one citizen's problem across every channel, with its case
    number (案件编号), running through the shared case workflow."""

    __tablename__ = "work_orders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_number: Mapped[str] = mapped_column(String(CASE_NUMBER_LENGTH), unique=True)
    appeal_type: Mapped[str] = mapped_column(String(12))
    category_code: Mapped[str] = mapped_column(String(20), default="")
    category_kind: Mapped[str] = mapped_column(String(10), default="")  # event | component
    description: Mapped[str] = mapped_column(Text)
    citizen_phone: Mapped[str] = mapped_column(String(20), default="", index=True)
    citizen_name: Mapped[str] = mapped_column(String(50), default="")
    channel: Mapped[str] = mapped_column(String(10))
    call_id: Mapped[str] = mapped_column(String(64), default="")
    state: Mapped[str] = mapped_column(String(12), index=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    rework_count: Mapped[int] = mapped_column(Integer, default=0)
    first_call_resolved: Mapped[bool] = mapped_column(Boolean, default=False)
    urgency: Mapped[str] = mapped_column(String(10), default="normal")  # normal | urgent
    address: Mapped[str] = mapped_column(String(200), default="")
    latitude: Mapped[float | None] = mapped_column(Float, nullable=True)  # WGS84
    longitude: Mapped[float | None] = mapped_column(Float, nullable=True)
    grid_code: Mapped[str] = mapped_column(String(15), default="", index=True)
    department_code: Mapped[str] = mapped_column(String(20), default="", index=True)
    duplicate_of: Mapped[str] = mapped_column(String(CASE_NUMBER_LENGTH),
                                              default="")  # suspected (疑似重复)
    merged_into: Mapped[str] = mapped_column(String(CASE_NUMBER_LENGTH), default="")
    repeat_caller: Mapped[bool] = mapped_column(Boolean, default=False)
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class WorkOrderEvent(Base):
    """One step of an order's history, append-only: who did what, when, from and to."""

    __tablename__ = "work_order_events"
    __table_args__ = (UniqueConstraint("order_id", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("work_orders.id", ondelete="CASCADE"),
                                          index=True)
    seq: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(30))
    from_state: Mapped[str] = mapped_column(String(12), default="")
    to_state: Mapped[str] = mapped_column(String(12))
    actor: Mapped[str] = mapped_column(String(50))
    role: Mapped[str] = mapped_column(String(20))
    note: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(UtcDateTime())


class WorkOrderCall(Base):
    """A call (通话) that belongs to an order: the one it was taken in on, a later one an
    agent added, or a citizen calling again who keyed its case number in the IVR. An order
    has many calls, a call belongs to at most one order (`call_id` is unique).

    `call_id` is the call's Asterisk Linkedid, known while the call is still up; its record
    is stored only when the last leg hangs up, so `call_record_id` stays empty (a pending
    link) until then and is filled once the record exists (tickets.service.resolve_links)."""

    __tablename__ = "work_order_calls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("work_orders.id", ondelete="CASCADE"),
                                          index=True)
    call_id: Mapped[str] = mapped_column(String(64), unique=True)
    call_record_id: Mapped[int | None] = mapped_column(
        ForeignKey(CallRecord.id, ondelete="SET NULL"), unique=True, nullable=True)
    how: Mapped[str] = mapped_column(String(10))  # intake | agent | ivr | migrated
    actor: Mapped[str] = mapped_column(String(50), default="")
    linked_at: Mapped[datetime] = mapped_column(UtcDateTime())


class WorkOrderAttachment(Base):
    """A file kept with an order: a citizen's voice message, a photo from the department."""

    __tablename__ = "work_order_attachments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("work_orders.id", ondelete="CASCADE"),
                                          index=True)
    kind: Mapped[str] = mapped_column(String(10))  # audio | photo | document
    path: Mapped[str] = mapped_column(String(500))
    sha256: Mapped[str] = mapped_column(String(64))
    bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Category(Base):
    """A class of the standard catalogue (GB/T 30428.2): an event (事件) or a component (部件),
    two digits per level, e.g. event 0102 暴露垃圾 under 01 市容环境."""

    __tablename__ = "categories"

    code: Mapped[str] = mapped_column(String(16), primary_key=True)
    kind: Mapped[str] = mapped_column(String(10), primary_key=True)  # event | component
    name: Mapped[str] = mapped_column(String(100))
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class Department(Base):
    """A responsible department (专业部门 / 处置单位) that handles dispatched orders."""

    __tablename__ = "departments"

    code: Mapped[str] = mapped_column(String(20), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class Grid(Base):
    """A unit grid (万米单元网格) with its outline as a GeoJSON geometry in WGS84; the
    bounding box lets the database find candidate grids for a point. The widest box's
    width is read from an index (`ix_grids_width`): a point's candidates are then a band
    of the `min_lon` index, not half the city's grids."""

    __tablename__ = "grids"

    code: Mapped[str] = mapped_column(String(15), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    geometry: Mapped[dict[str, Any]] = mapped_column(JSON)
    min_lon: Mapped[float] = mapped_column(Float, index=True)
    max_lon: Mapped[float] = mapped_column(Float)
    min_lat: Mapped[float] = mapped_column(Float, index=True)
    max_lat: Mapped[float] = mapped_column(Float)


Index("ix_grids_width", Grid.max_lon - Grid.min_lon)


class DispatchRule(Base):
    """Which department answers for a grid and a category; the longest matching code
    prefixes win ("" matches everything)."""

    __tablename__ = "dispatch_rules"
    __table_args__ = (UniqueConstraint("grid_prefix", "category_prefix"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    grid_prefix: Mapped[str] = mapped_column(String(15), default="")
    category_prefix: Mapped[str] = mapped_column(String(16), default="")
    department_code: Mapped[str] = mapped_column(ForeignKey("departments.code"))


class TimeLimit(Base):
    """A time limit (时限) for one workflow step, for orders whose category starts with
    `category_prefix` ("" for any), optionally only for one appeal type or urgency.
    `clock` is continuous | working_hours | working_days | calendar_days; `amount` counts
    the clock's own unit (hours or days) when `unit` is "", or minutes when it is "minutes"."""

    __tablename__ = "time_limits"
    __table_args__ = (UniqueConstraint("step", "category_prefix", "appeal_type", "urgency"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    step: Mapped[str] = mapped_column(String(12))
    category_prefix: Mapped[str] = mapped_column(String(16), default="")
    appeal_type: Mapped[str] = mapped_column(String(12), default="")
    urgency: Mapped[str] = mapped_column(String(10), default="")
    amount: Mapped[int] = mapped_column(Integer)
    clock: Mapped[str] = mapped_column(String(16))
    unit: Mapped[str] = mapped_column(String(8), default="", server_default="")


class WorkOrderDeadline(Base):
    """The clock on one step of one order: when it started, when the yellow and red
    warnings fall, when it was met; a rework starts the step again as a new round. `amount`
    is the limit in force, `extended` of it granted by extensions (延期), both in `unit` as on
    TimeLimit."""

    __tablename__ = "work_order_deadlines"
    __table_args__ = (UniqueConstraint("order_id", "step", "round"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("work_orders.id", ondelete="CASCADE"),
                                          index=True)
    step: Mapped[str] = mapped_column(String(12))
    round: Mapped[int] = mapped_column(Integer, default=1)
    clock: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(Integer)
    unit: Mapped[str] = mapped_column(String(8), default="", server_default="")
    started_at: Mapped[datetime] = mapped_column(UtcDateTime())
    yellow_at: Mapped[datetime] = mapped_column(UtcDateTime())
    due_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    extensions: Mapped[int] = mapped_column(Integer, default=0)
    extended: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    met_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    warning: Mapped[str] = mapped_column(String(8), default="")  # "" | yellow | red
    escalated_at: Mapped[datetime | None] = mapped_column(UtcDateTime(),
                                                          nullable=True)


class Survey(Base):
    """The callback and satisfaction survey (回访) after an order closes: automated calls at
    the configured hours, then an SMS, then an agent's callback list.

    scheduled -> calling -> scheduled ... -> sms -> agent -> done (each step a conditional
    update, so each attempt is made once)."""

    __tablename__ = "surveys"
    __table_args__ = (UniqueConstraint("order_id", "round"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("work_orders.id", ondelete="CASCADE"),
                                          index=True)
    round: Mapped[int] = mapped_column(Integer, default=1)
    phone: Mapped[str] = mapped_column(String(20))
    state: Mapped[str] = mapped_column(String(10), index=True)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    call_attempts: Mapped[int] = mapped_column(Integer, default=0)
    attempt_id: Mapped[str] = mapped_column(String(40), default="")  # the live attempt
    sms_sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime(),
                                                         nullable=True)
    rating: Mapped[int | None] = mapped_column(Integer, nullable=True)  # 1 best .. 5 worst
    channel: Mapped[str] = mapped_column(String(10), default="")  # phone | sms | agent
    outcome: Mapped[str] = mapped_column(String(20), default="")
    note: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    answered_at: Mapped[datetime | None] = mapped_column(UtcDateTime(),
                                                         nullable=True)


class WebhookDelivery(Base):
    """One outbound event for the city platform (数据交换), delivered at least once and
    carrying its idempotency key so the receiver takes it once."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(40), unique=True)  # the idempotency key
    event_type: Mapped[str] = mapped_column(String(40))
    case_number: Mapped[str] = mapped_column(String(CASE_NUMBER_LENGTH), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    url: Mapped[str] = mapped_column(String(500))
    state: Mapped[str] = mapped_column(String(10), index=True)  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    last_error: Mapped[str] = mapped_column(String(300), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime(),
                                                          nullable=True)


class InboundUpdate(Base):
    """A status update received from the city platform, kept by its idempotency key so a
    replayed request gets the first answer and changes nothing."""

    __tablename__ = "inbound_updates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(80), unique=True)
    case_number: Mapped[str] = mapped_column(String(CASE_NUMBER_LENGTH))
    action: Mapped[str] = mapped_column(String(30))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime())


class KnowledgeArticle(Base):
    """An article of the knowledge base (知识库) agents answer consultations (咨询) from:
    its title, the answer, the article category it is filed under, extra search keywords
    (the words callers use: 倒垃圾 for 投放), whether agents see it, and who edited it last."""

    __tablename__ = "knowledge_articles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(200), unique=True)
    body: Mapped[str] = mapped_column(Text)
    category: Mapped[str] = mapped_column(String(40), index=True)
    keywords: Mapped[str] = mapped_column(String(300), default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_by: Mapped[str] = mapped_column(String(50))


class KnowledgeTerm(Base):
    """One word of an article's title, keywords or body as the segmenter (jieba) cut it,
    with how often it occurs there: the search matches a query's words against these, the
    same on SQLite and PostgreSQL."""

    __tablename__ = "knowledge_terms"
    __table_args__ = (UniqueConstraint("article_id", "field", "term"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    article_id: Mapped[int] = mapped_column(
        ForeignKey("knowledge_articles.id", ondelete="CASCADE"), index=True)
    field: Mapped[str] = mapped_column(String(8))  # title | keywords | body
    term: Mapped[str] = mapped_column(String(40), index=True)
    hits: Mapped[int] = mapped_column(Integer, default=1)


class OrderRollup(Base):
    """One hour's, day's or month's (`grain` h, d, m) count of one figure of the reports and
    the evaluation (reports.kpis), for one combination of its keys (`figure` says what k1..k4
    hold: tickets.rollups.FIGURES). `hour` is when the hour, day or month starts, in UTC:
    every time zone the centre may use is a whole number of hours from UTC (Asia/Shanghai
    +8), so its local days, weeks and months are whole UTC hours; days and months are those
    of UTC+8 (tickets.rollups.TILE_ZONE). The orders changed since are folded in by the
    tickets worker and before a report reads (tickets.rollups)."""

    __tablename__ = "order_rollups"
    __table_args__ = (UniqueConstraint("figure", "grain", "hour", "k1", "k2", "k3", "k4"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    figure: Mapped[str] = mapped_column(String(16))
    grain: Mapped[str] = mapped_column(String(1), default="h")
    hour: Mapped[datetime] = mapped_column(UtcDateTime())
    k1: Mapped[str] = mapped_column(String(50), default="")
    k2: Mapped[str] = mapped_column(String(50), default="")
    k3: Mapped[str] = mapped_column(String(50), default="")
    k4: Mapped[str] = mapped_column(String(50), default="")
    n: Mapped[int] = mapped_column(Integer, default=0)


class OrderRollupMark(Base):
    """What one order adds to `order_rollups` now: [figure, hour, k1, k2, k3, k4, n] lists.
    A change to the order takes its old part out and puts its new part in, so the rollups
    stay the exact sum of the orders however their department, state or clocks change."""

    __tablename__ = "order_rollup_marks"

    order_id: Mapped[int] = mapped_column(ForeignKey("work_orders.id", ondelete="CASCADE"),
                                          primary_key=True)
    facts: Mapped[list[Any]] = mapped_column(JSON)


class OrderRollupPending(Base):
    """An order changed since its part was last folded into `order_rollups` (tickets.rollups):
    stored in the transaction of the change, so a crash leaves both or neither, and taken
    out by the fold that brings the order's part in step."""

    __tablename__ = "order_rollup_pending"

    order_id: Mapped[int] = mapped_column(ForeignKey("work_orders.id", ondelete="CASCADE"),
                                          primary_key=True)
    changes: Mapped[int] = mapped_column(Integer, default=1)


class OrderRequest(Base):
    """An order POST sent with an Idempotency-Key, kept in the transaction that took the
    order in: the same request sent again (its answer lost to a dropped connection, a 503)
    gets that order, not a second one. Keys are the sender's own: (actor, key) is unique."""

    __tablename__ = "order_requests"
    __table_args__ = (UniqueConstraint("actor", "idempotency_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    actor: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str] = mapped_column(String(80))
    body_sha256: Mapped[str] = mapped_column(String(64))
    case_number: Mapped[str] = mapped_column(String(CASE_NUMBER_LENGTH))
    received_at: Mapped[datetime] = mapped_column(UtcDateTime())
