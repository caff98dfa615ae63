"""The classification catalogue (分类目录): event (事件) and component (部件) classes of
GB/T 30428.2, responsible departments (专业部门), dispatch rules (派遣规则) and time limits
(时限).

A loaded file is the whole catalogue: loading again updates names, adds new entries,
deactivates categories and departments the file no longer lists (orders may still name
them) and removes the rules and limits it no longer lists (nothing refers to those).

Event and component codes overlap (event 0101 私搭乱建, component 0101 上水井盖), but rules and
limits keep one category prefix column, so a component prefix is stored with a "C" in front:

    ""       every order (the fallback)
    "0102"   event codes starting 0102
    "C"      every component
    "C04"    component codes starting 04

Callers never see the mark: every function here takes `kind` and a bare code.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pypinyin import Style, lazy_pinyin
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from core.config import read_yaml
from core.errors import HotlineError
from tickets.models import Category, Department, DispatchRule, TimeLimit
from tickets.rule_changes import changed

PACKAGED = Path(__file__).with_name("catalogue.yaml")

KINDS = ("event", "component")
STEPS = ("verify", "open", "dispatch", "sign", "handle", "check", "close", "complete")
CLOCKS = ("continuous", "working_hours", "working_days", "calendar_days")
# A limit counts its clock's own unit unless it says minutes (stored as "" and "minutes").
OWN_UNITS = {"continuous": "hours", "working_hours": "hours", "working_days": "days",
             "calendar_days": "days"}
APPEAL_TYPES = ("enquiry", "help", "complaint", "report", "suggestion", "praise")
URGENCIES = ("normal", "urgent")
MAX_AMOUNT = 10_000  # far beyond any real limit; stops a typo such as 1300 days going in

_COMPONENT = "C"
_CODE = re.compile(r"(?:[0-9]{2}){1,8}")  # two digits per level, at most eight levels
_PREFIX = re.compile(r"[0-9]{0,16}")
_GRID_PREFIX = re.compile(r"[0-9]{0,15}")
_DEPARTMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,19}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SECTIONS = ("events", "components", "departments", "dispatch_rules", "time_limits")


class CatalogueError(HotlineError):
    """A catalogue entry that cannot be taken; the message names the entry."""


@dataclass
class Counts:
    added: int = 0
    updated: int = 0
    retired: int = 0  # deactivated (categories, departments) or removed (rules, limits)


@dataclass
class LoadSummary:
    """What one load changed."""

    categories: Counts = field(default_factory=Counts)
    departments: Counts = field(default_factory=Counts)
    rules: Counts = field(default_factory=Counts)
    limits: Counts = field(default_factory=Counts)

    @property
    def changed(self) -> bool:
        return any(c.added or c.updated or c.retired
                   for c in (self.categories, self.departments, self.rules, self.limits))

    def __str__(self) -> str:
        parts = []
        for f in fields(self):
            c: Counts = getattr(self, f.name)
            gone = "deactivated" if f.name in ("categories", "departments") else "removed"
            parts.append(f"{f.name}: {c.added} added, {c.updated} updated, {c.retired} {gone}")
        return "; ".join(parts)


@dataclass(frozen=True)
class Rule:
    """A dispatch rule as the operator wrote it; kind is "" for the catch-all."""

    grid_prefix: str
    kind: str
    category_prefix: str
    department_code: str


@dataclass(frozen=True)
class Limit:
    """A time limit as the operator wrote it; kind is "" when it is for any category, unit
    is what amount counts: minutes, or the clock's own hours or days."""

    step: str
    kind: str
    category_prefix: str
    appeal_type: str
    urgency: str
    amount: int
    clock: str
    unit: str


# --- loading -------------------------------------------------------------------------


def seed(session: Session) -> LoadSummary:
    """Load the packaged standard catalogue."""
    return load_file(session, PACKAGED)


def load_file(session: Session, path: str | Path) -> LoadSummary:
    """Load an operator's catalogue file; errors name the file and the entry."""
    path = Path(path)
    return load_catalogue(session, read_yaml(path, "catalogue"), source=f"catalogue {path}")


def load_catalogue(session: Session, data: Any, source: str = "catalogue") -> LoadSummary:
    """Check every entry of `data` first, then bring the tables in line with it. Run it in
    one transaction: a database error half-way rolls back with the caller's transaction."""
    parsed = _parse(data, source)
    summary = LoadSummary()
    _sync_categories(session, parsed.categories, summary.categories)
    _sync_departments(session, parsed.departments, summary.departments)
    session.flush()  # rules refer to departments by foreign key
    _sync_rules(session, parsed.rules, summary.rules)
    _sync_limits(session, parsed.limits, summary.limits)
    session.flush()
    limits = summary.limits
    # A first fill of an empty table is no change to tell: no cache keeps an empty table
    # (tickets.in_force reads it every step until it holds a limit).
    had_limits = limits.retired or len(parsed.limits) > limits.added
    if had_limits and (limits.added or limits.updated or limits.retired):
        changed(session, "limits")
    return summary


@dataclass
class _Parsed:
    categories: dict[tuple[str, str], tuple[str, bool]] = field(default_factory=dict)
    departments: dict[str, tuple[str, bool]] = field(default_factory=dict)
    rules: dict[tuple[str, str], str] = field(default_factory=dict)
    limits: dict[tuple[str, str, str, str], tuple[int, str, str]] = field(default_factory=dict)


def _parse(data: Any, source: str) -> _Parsed:
    if not isinstance(data, dict):
        raise CatalogueError(f"{source}: expected a mapping with {', '.join(_SECTIONS)}")
    unknown = sorted(str(k) for k in data if k not in _SECTIONS)
    if unknown:
        raise CatalogueError(f"{source}: unknown section {unknown[0]!r}; "
                             f"sections are {', '.join(_SECTIONS)}")
    for section in _SECTIONS:
        if not isinstance(data.get(section), list):
            # a missing section would deactivate everything it used to hold
            raise CatalogueError(f"{source}: section {section!r} must be a list "
                                 "(write [] for none)")
    parsed = _Parsed()
    for kind, section in (("event", "events"), ("component", "components")):
        places: dict[str, str] = {}
        for i, entry in enumerate(data[section]):
            where = f"{source}: {section}[{i}]"
            item = _entry(entry, where, required=("code", "name"), optional=("active",))
            code = _category_code(item["code"], where)
            where = places[code] = f"{where} ({code})"
            if (kind, code) in parsed.categories:
                raise CatalogueError(f"{where}: listed twice")
            parsed.categories[(kind, code)] = (_name(item["name"], where),
                                               _flag(item.get("active", True), where))
        for code, where in places.items():  # a parent may come after its subclasses
            if len(code) > 2 and code[:-2] not in places:
                raise CatalogueError(f"{where}: parent class {code[:-2]} is not listed")
    for i, entry in enumerate(data["departments"]):
        where = f"{source}: departments[{i}]"
        item = _entry(entry, where, required=("code", "name"), optional=("active",))
        code = _department_code(item["code"], where)
        where = f"{where} ({code})"
        if code in parsed.departments:
            raise CatalogueError(f"{where}: listed twice")
        parsed.departments[code] = (_name(item["name"], where),
                                    _flag(item.get("active", True), where))
    known = {k: [c for kk, c in parsed.categories if kk == k] for k in KINDS}
    for i, entry in enumerate(data["dispatch_rules"]):
        where = f"{source}: dispatch_rules[{i}]"
        item = _entry(entry, where, required=("department",),
                      optional=("grid_prefix", "kind", "category_prefix"))
        grid = _grid_prefix(item.get("grid_prefix", ""), where)
        kind = _kind(item.get("kind", "event"), where)
        prefix = _category_prefix(item.get("category_prefix", ""), kind, where, known[kind])
        where = f"{where} (grid {grid!r}, {kind} {prefix!r})"
        department = _department_code(item["department"], where)
        if parsed.departments.get(department, ("", False))[1] is not True:
            raise CatalogueError(f"{where}: department {department!r} is not an active "
                                 "department of this catalogue")
        key = (grid, _stored(kind, prefix))
        if key in parsed.rules:
            raise CatalogueError(f"{where}: a rule for this grid and category is listed twice")
        parsed.rules[key] = department
    for i, entry in enumerate(data["time_limits"]):
        where = f"{source}: time_limits[{i}]"
        item = _entry(entry, where, required=("step", "amount", "clock"),
                      optional=("unit", "kind", "category_prefix", "appeal_type", "urgency"))
        step = _choice(item["step"], STEPS, "step", where)
        kind = _kind(item.get("kind", "event"), where)
        prefix = _category_prefix(item.get("category_prefix", ""), kind, where, known[kind])
        where = f"{where} ({step} {kind} {prefix!r})"
        appeal = _choice(item.get("appeal_type", ""), ("", *APPEAL_TYPES), "appeal_type", where)
        urgency = _choice(item.get("urgency", ""), ("", *URGENCIES), "urgency", where)
        key = (step, _stored(kind, prefix), appeal, urgency)
        if key in parsed.limits:
            raise CatalogueError(f"{where}: a limit for this step, category, appeal type and "
                                 "urgency is listed twice")
        clock = _choice(item["clock"], CLOCKS, "clock", where)
        parsed.limits[key] = (_amount(item["amount"], where), clock,
                              _unit(item.get("unit", ""), clock, where))
    return parsed


def _sync_categories(session: Session, wanted: dict[tuple[str, str], tuple[str, bool]],
                     counts: Counts) -> None:
    existing = {(c.kind, c.code): c for c in session.scalars(select(Category))}
    for key, (name, active) in wanted.items():
        row = existing.get(key)
        if row is None:
            session.add(Category(kind=key[0], code=key[1], name=name, active=active))
            counts.added += 1
        elif (row.name, row.active) != (name, active):
            row.name, row.active = name, active
            counts.updated += 1
    for key, row in existing.items():
        if key not in wanted and row.active:
            row.active = False
            counts.retired += 1


def _sync_departments(session: Session, wanted: dict[str, tuple[str, bool]],
                      counts: Counts) -> None:
    existing = {d.code: d for d in session.scalars(select(Department))}
    for code, (name, active) in wanted.items():
        row = existing.get(code)
        if row is None:
            session.add(Department(code=code, name=name, active=active))
            counts.added += 1
        elif (row.name, row.active) != (name, active):
            row.name, row.active = name, active
            counts.updated += 1
    for code, row in existing.items():
        if code not in wanted and row.active:
            row.active = False
            counts.retired += 1


def _sync_rules(session: Session, wanted: dict[tuple[str, str], str], counts: Counts) -> None:
    existing = {(r.grid_prefix, r.category_prefix): r
                for r in session.scalars(select(DispatchRule))}
    for key, row in existing.items():
        if key not in wanted:
            session.delete(row)
            counts.retired += 1
    for key, department in wanted.items():
        row = existing.get(key)
        if row is None:
            session.add(DispatchRule(grid_prefix=key[0], category_prefix=key[1],
                                     department_code=department))
            counts.added += 1
        elif row.department_code != department:
            row.department_code = department
            counts.updated += 1


def _sync_limits(session: Session,
                 wanted: dict[tuple[str, str, str, str], tuple[int, str, str]],
                 counts: Counts) -> None:
    existing = {(t.step, t.category_prefix, t.appeal_type, t.urgency): t
                for t in session.scalars(select(TimeLimit))}
    for key, row in existing.items():
        if key not in wanted:
            session.delete(row)
            counts.retired += 1
    for key, (amount, clock, unit) in wanted.items():
        row = existing.get(key)
        if row is None:
            session.add(TimeLimit(step=key[0], category_prefix=key[1], appeal_type=key[2],
                                  urgency=key[3], amount=amount, clock=clock, unit=unit))
            counts.added += 1
        elif (row.amount, row.clock, row.unit) != (amount, clock, unit):
            row.amount, row.clock, row.unit = amount, clock, unit
            counts.updated += 1


# --- checks ----------------------------------------------------------------------------


def _entry(entry: Any, where: str, required: tuple[str, ...],
           optional: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise CatalogueError(f"{where}: expected a mapping with {', '.join(required)}")
    for key in entry:
        if key not in required and key not in optional:
            raise CatalogueError(f"{where}: unknown key {str(key)[:40]!r}; "
                                 f"keys are {', '.join(required + optional)}")
    for key in required:
        if key not in entry:
            raise CatalogueError(f"{where}: {key} is missing")
    return entry


def _text(value: Any, what: str, where: str) -> str:
    if not isinstance(value, str):
        # YAML turns an unquoted 0101 into the number 65: say how to write it
        raise CatalogueError(f"{where}: {what} must be a quoted string, got {value!r}")
    return value


def _category_code(value: Any, where: str) -> str:
    code = _text(value, "code", where)
    if not _CODE.fullmatch(code):
        raise CatalogueError(f"{where}: code {code[:20]!r} must be 2-16 digits, "
                             "two per level")
    return code


def _department_code(value: Any, where: str) -> str:
    code = _text(value, "department code", where)
    if not _DEPARTMENT.fullmatch(code):
        raise CatalogueError(f"{where}: department code {code[:30]!r} must be 1-20 letters, "
                             "digits, '-', '_' or '.'")
    return code


def _grid_prefix(value: Any, where: str) -> str:
    prefix = _text(value, "grid_prefix", where)
    if not _GRID_PREFIX.fullmatch(prefix):
        raise CatalogueError(f"{where}: grid_prefix {prefix[:20]!r} must be 0-15 digits")
    return prefix


def _category_prefix(value: Any, kind: str, where: str, known: Iterable[str]) -> str:
    prefix = _text(value, "category_prefix", where)
    if not _PREFIX.fullmatch(prefix) or len(_stored(kind, prefix)) > 16:
        limit = 16 if kind == "event" else 15
        raise CatalogueError(f"{where}: category_prefix {prefix[:20]!r} must be 0-{limit} "
                             "digits")
    if prefix and not any(code.startswith(prefix) for code in known):
        raise CatalogueError(f"{where}: category_prefix {prefix!r} matches no {kind} "
                             "category")
    return prefix


def _name(value: Any, where: str) -> str:
    name = _text(value, "name", where).strip()
    if not name:
        raise CatalogueError(f"{where}: name is empty")
    if len(name) > 100:
        raise CatalogueError(f"{where}: name is {len(name)} characters, at most 100")
    if _CONTROL.search(name):
        raise CatalogueError(f"{where}: name contains control characters")
    return name


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise CatalogueError(f"{where}: active must be true or false, got {value!r}")
    return value


def _kind(value: Any, where: str) -> str:
    return _choice(value, KINDS, "kind", where)


def _choice(value: Any, options: tuple[str, ...], what: str, where: str) -> str:
    if not isinstance(value, str) or value not in options:
        shown = ", ".join(o or '""' for o in options)
        raise CatalogueError(f"{where}: {what} {str(value)[:30]!r} is not one of {shown}")
    return value


def _amount(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_AMOUNT:
        raise CatalogueError(f"{where}: amount must be a whole number 1-{MAX_AMOUNT}, "
                             f"got {value!r}")
    return value


def _unit(value: Any, clock: str, where: str) -> str:
    """A limit's unit as stored: "" for the clock's own (hours or days), or "minutes"."""
    own = OWN_UNITS[clock]
    if value in ("", own):
        return ""
    return _choice(value, ("minutes", own), f"unit (on the {clock} clock)", where)


def _stored(kind: str, prefix: str) -> str:
    """The category prefix as rules and limits store it (see the module docstring)."""
    return _COMPONENT + prefix if kind == "component" else prefix


def _unstored(stored: str) -> tuple[str, str]:
    if stored.startswith(_COMPONENT):
        return "component", stored[1:]
    return ("event" if stored else ""), stored


def _target(code: str, kind: str) -> str:
    """An order's category in stored form, for matching stored prefixes against."""
    return _stored(kind, code) if code else ""


# --- readers ---------------------------------------------------------------------------


def categories(session: Session, kind: str | None = None,
               active_only: bool = True) -> list[Category]:
    """Categories by kind and code; parents sort before their subclasses."""
    query = select(Category).order_by(Category.kind.desc(), Category.code)  # events first
    if kind is not None:
        query = query.where(Category.kind == _kind(kind, "categories"))
    if active_only:
        query = query.where(Category.active.is_(True))
    return list(session.scalars(query))


def category(session: Session, code: str, kind: str = "event") -> Category | None:
    """One category, active or not; an order's bare code is an event unless said otherwise."""
    return session.get(Category, (code, kind))


def departments(session: Session, active_only: bool = True) -> list[Department]:
    query = select(Department).order_by(Department.code)
    if active_only:
        query = query.where(Department.active.is_(True))
    return list(session.scalars(query))


def rules(session: Session) -> list[Rule]:
    rows = session.scalars(select(DispatchRule).order_by(DispatchRule.grid_prefix,
                                                         DispatchRule.category_prefix))
    return [Rule(r.grid_prefix, *_unstored(r.category_prefix), r.department_code) for r in rows]


def limits(session: Session) -> list[Limit]:
    rows = session.scalars(select(TimeLimit).order_by(
        TimeLimit.step, TimeLimit.category_prefix, TimeLimit.appeal_type, TimeLimit.urgency))
    return [Limit(t.step, *_unstored(t.category_prefix), t.appeal_type, t.urgency, t.amount,
                  t.clock, t.unit or OWN_UNITS.get(t.clock, "")) for t in rows]


def department_for(session: Session, category_code: str, grid_code: str = "",
                   kind: str = "event") -> str:
    """The department code that answers for an order, or "" when no rule matches (the
    dispatcher picks by hand).

    Precedence: among rules whose grid prefix and category prefix both match, the longest
    grid prefix wins (属地优先: a street's own rules beat citywide ones, even a citywide rule
    for a narrower category); among those, the longest category prefix. Rules naming an
    inactive department are passed over, so the next best rule answers."""
    target = _target(category_code, kind)
    rows = session.execute(
        select(DispatchRule.grid_prefix, DispatchRule.category_prefix,
               DispatchRule.department_code)
        .join(Department, Department.code == DispatchRule.department_code)
        .where(Department.active.is_(True)))
    matches = [(len(g), len(c), d) for g, c, d in rows
               if grid_code.startswith(g) and target.startswith(c)]
    return max(matches)[2] if matches else ""


def limit_for(session: Session, step: str, *, category_code: str, kind: str = "event",
              appeal_type: str = "", urgency: str = "",
              in_force: Mapping[str, Sequence[LimitInForce]] | None = None
              ) -> LimitInForce | None:
    """The time limit in force for `step` of an order of this category, appeal type and
    urgency: the longest category prefix first ("" matches all), then an exact urgency over
    "", then an exact appeal type over "". None: the step has no limit for such an order.

    Urgency comes before the appeal type because an urgent order is urgent whatever kind of
    appeal it is: an urgent limit beats every normal limit of its category prefix, appeal
    types' included, so one urgent row per prefix covers them all. A category prefix with
    limits of its own needs its own urgent limit, or its limit applies to urgent orders too
    (which is right for a category that is quick anyway).

    `in_force`: the limits as `limits_in_force` read them, when the caller has them (a step
    reads them once, or keeps them: tickets.in_force); else they are read here."""
    target = _target(category_code, kind)
    if in_force is None:
        in_force = limits_in_force(session)
    matching = [r for r in in_force.get(step, ())
                if r.appeal_type in ("", appeal_type) and r.urgency in ("", urgency)
                and target.startswith(r.category_prefix or "")]
    if not matching:
        return None
    return max(matching, key=lambda r: (len(r.category_prefix or ""), r.urgency != "",
                                        r.appeal_type != ""))


@dataclass(frozen=True)
class LimitInForce:
    """A time_limits row as limit_for hands it out: a plain value, shared by every session
    of the process (never an ORM row of one session)."""

    id: int
    step: str
    category_prefix: str
    appeal_type: str
    urgency: str
    amount: int
    clock: str
    unit: str


_LIMIT_COLUMNS = (TimeLimit.id, TimeLimit.step, TimeLimit.category_prefix,
                  TimeLimit.appeal_type, TimeLimit.urgency, TimeLimit.amount, TimeLimit.clock,
                  TimeLimit.unit)
# database -> (the table's rows as last read, those rows by step). Each call reads the rows
# again with one plain Core query; the values and the index are only rebuilt when they
# differ. The order loop reads through tickets.in_force, which calls this only when an
# operator changed the rules (or Redis cannot say whether one did).
_LIMIT_ROWS = select(*_LIMIT_COLUMNS).order_by(TimeLimit.id)  # built once: read every step
_limits_cache: dict[str, tuple[tuple[tuple[Any, ...], ...], dict[str, list[LimitInForce]]]] = {}


def limits_in_force(session: Session) -> dict[str, list[LimitInForce]]:
    """Every time limit, by step, as the table holds them now (one plain read)."""
    rows = tuple(tuple(row) for row in session.execute(_LIMIT_ROWS))
    key = str(session.get_bind().engine.url)
    cached = _limits_cache.get(key)
    if cached is not None and cached[0] == rows:
        return cached[1]
    by_step: dict[str, list[LimitInForce]] = {}
    for row in rows:
        limit = LimitInForce(*row)
        by_step.setdefault(limit.step, []).append(limit)
    _limits_cache[key] = (rows, by_step)
    return by_step


# --- single edits (CLI, API) -----------------------------------------------------------


def set_category(session: Session, code: str, kind: str, name: str,
                 active: bool = True) -> Category:
    """Add or change one category; a subclass needs its parent class first."""
    where = f"category {kind!s:.12} {code!s:.20}"
    kind = _kind(kind, where)
    code = _category_code(code, where)
    name = _name(name, where)
    active = _flag(active, where)
    if len(code) > 2 and category(session, code[:-2], kind) is None:
        raise CatalogueError(f"{where}: parent class {code[:-2]} does not exist")
    row = category(session, code, kind)
    if row is None:
        row = Category(code=code, kind=kind, name=name, active=active)
        session.add(row)
    else:
        row.name, row.active = name, active
    session.flush()
    return row


def set_department(session: Session, code: str, name: str, active: bool = True) -> Department:
    """Add or change one department; deactivating it sends its rules' orders to the next
    best rule."""
    where = f"department {code!s:.20}"
    code = _department_code(code, where)
    name = _name(name, where)
    active = _flag(active, where)
    row = session.get(Department, code)
    if row is None:
        row = Department(code=code, name=name, active=active)
        session.add(row)
    else:
        row.name, row.active = name, active
    session.flush()
    return row


def set_rule(session: Session, grid_prefix: str, category_prefix: str, department_code: str,
             kind: str = "event") -> DispatchRule:
    """Add or change the rule for one grid prefix and category prefix."""
    where = f"rule grid {grid_prefix!s:.15} {kind!s:.12} {category_prefix!s:.16}"
    grid_prefix = _grid_prefix(grid_prefix, where)
    kind = _kind(kind, where)
    category_prefix = _category_prefix(category_prefix, kind, where,
                                       _codes(session, kind, category_prefix))
    department = session.get(Department, _department_code(department_code, where))
    if department is None or not department.active:
        raise CatalogueError(f"{where}: no active department {department_code!r}")
    stored = _stored(kind, category_prefix)
    row = session.scalar(select(DispatchRule).where(DispatchRule.grid_prefix == grid_prefix,
                                                    DispatchRule.category_prefix == stored))
    if row is None:
        row = DispatchRule(grid_prefix=grid_prefix, category_prefix=stored,
                           department_code=department.code)
        session.add(row)
    else:
        row.department_code = department.code
    session.flush()
    return row


def remove_rule(session: Session, grid_prefix: str, category_prefix: str,
                kind: str = "event") -> bool:
    """Remove one rule; False when there was none."""
    kind = _kind(kind, "remove rule")
    gone = session.execute(delete(DispatchRule).where(
        DispatchRule.grid_prefix == grid_prefix,
        DispatchRule.category_prefix == _stored(kind, category_prefix)))
    return bool(gone.rowcount)


def set_limit(session: Session, step: str, amount: int, clock: str, category_prefix: str = "",
              kind: str = "event", appeal_type: str = "", urgency: str = "",
              unit: str = "") -> TimeLimit:
    """Add or change the limit for one step, category prefix, appeal type and urgency;
    `amount` in minutes with unit "minutes", else in the clock's own hours or days.
    Orders already running keep the limit their clock started with."""
    where = f"limit {step!s:.12} {kind!s:.12} {category_prefix!s:.16}"
    step = _choice(step, STEPS, "step", where)
    kind = _kind(kind, where)
    category_prefix = _category_prefix(category_prefix, kind, where,
                                       _codes(session, kind, category_prefix))
    appeal_type = _choice(appeal_type, ("", *APPEAL_TYPES), "appeal_type", where)
    urgency = _choice(urgency, ("", *URGENCIES), "urgency", where)
    amount = _amount(amount, where)
    clock = _choice(clock, CLOCKS, "clock", where)
    unit = _unit(unit, clock, where)
    stored = _stored(kind, category_prefix)
    row = session.scalar(select(TimeLimit).where(
        TimeLimit.step == step, TimeLimit.category_prefix == stored,
        TimeLimit.appeal_type == appeal_type, TimeLimit.urgency == urgency))
    if row is None:
        row = TimeLimit(step=step, category_prefix=stored, appeal_type=appeal_type,
                        urgency=urgency, amount=amount, clock=clock, unit=unit)
        session.add(row)
    else:
        row.amount, row.clock, row.unit = amount, clock, unit
    session.flush()
    changed(session, "limits")
    return row


def remove_limit(session: Session, step: str, category_prefix: str = "", kind: str = "event",
                 appeal_type: str = "", urgency: str = "") -> bool:
    """Remove one limit; False when there was none."""
    kind = _kind(kind, "remove limit")
    gone = session.execute(delete(TimeLimit).where(
        TimeLimit.step == step, TimeLimit.category_prefix == _stored(kind, category_prefix),
        TimeLimit.appeal_type == appeal_type, TimeLimit.urgency == urgency))
    if gone.rowcount:
        changed(session, "limits")
    return bool(gone.rowcount)


def _codes(session: Session, kind: str, prefix: str) -> list[str]:
    if not prefix or not isinstance(prefix, str):
        return []
    return list(session.scalars(select(Category.code).where(
        Category.kind == kind, Category.code.startswith(prefix, autoescape=True))))


def ensure_loaded(session: Session, path: str = "") -> LoadSummary | None:
    """On a fresh database, the operator's catalogue file (tickets.catalogue_file) or the
    packaged standard set; None when a catalogue is already there (edits are kept)."""
    if session.scalar(select(func.count()).select_from(Category)):
        return None
    return load_file(session, path) if path else seed(session)


# --- search (分类检索: by code, name or pinyin initials) ------------------------------------


@dataclass(frozen=True)
class Found:
    """A category a search found: its code, name and the initials of its name's pinyin
    (拼音首字母, 垃圾堆放 -> ljdf)."""

    kind: str
    code: str
    name: str
    initials: str


# The pinyin of every active category's name, worked out once per catalogue content: a
# search compares the rows' (kind, code, name) with what the index was built from and
# rebuilds only when the catalogue changed (a load, an edit), never per keystroke.
_index: tuple[tuple[tuple[str, str, str], ...], list[Found]] = ((), [])
_index_lock = threading.Lock()
MAX_QUERY = 20


def _initials(name: str) -> str:
    letters = lazy_pinyin(name, style=Style.FIRST_LETTER, errors="ignore")
    return "".join(letters).lower()


def _search_index(session: Session) -> list[Found]:
    global _index
    rows = tuple((kind, code, name) for kind, code, name in session.execute(
        select(Category.kind, Category.code, Category.name).where(Category.active.is_(True))
        .order_by(Category.kind.desc(), Category.code)))
    with _index_lock:
        if _index[0] != rows:
            _index = (rows, [Found(kind, code, name, _initials(name))
                             for kind, code, name in rows])
        return _index[1]


def search_categories(session: Session, text: str, limit: int = 8) -> list[Found]:
    """Active categories whose code starts with `text` (0102), whose name holds it (垃圾),
    or whose name's pinyin initials hold it (ljdf, any case): the closest first (a code or
    initials from the start before a match inside), events before components, by code."""
    wanted = (text or "").strip()[:MAX_QUERY]
    if not wanted:
        return []
    letters = wanted.lower()
    ranked = []
    for found in _search_index(session):
        if found.code.startswith(wanted) or found.name.startswith(wanted) \
                or (letters.isascii() and found.initials.startswith(letters)):
            rank = 0
        elif wanted in found.name or (letters.isascii() and letters.isalpha()
                                      and letters in found.initials):
            rank = 1
        else:
            continue
        ranked.append((rank, found.kind != "event", found.code, found))
    ranked.sort(key=lambda r: r[:3])
    return [r[3] for r in ranked[:max(0, limit)]]
