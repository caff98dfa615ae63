"""Every route declares who may use it: `@requires(permission)` on the view.

PERMISSIONS maps each permission to the roles that hold it; `PUBLIC` needs no account. The
route x role test walks the app's url_map and finds every view's `access` attribute, so a
route without a declaration fails the suite.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import abort

from accounts.service import (
    ADMIN,
    AUDITOR,
    DEPARTMENT,
    DISPATCHER,
    OPERATOR,
    ROLES,
    SHIFT_CHIEF,
    SUPERVISOR,
    Identity,
)
from accounts.web import current_identity

PUBLIC = "public"
_STAFF = frozenset({OPERATOR, SUPERVISOR, SHIFT_CHIEF, DISPATCHER, ADMIN, AUDITOR})
_WORKFLOW = frozenset({OPERATOR, SUPERVISOR, SHIFT_CHIEF, DISPATCHER, DEPARTMENT})
# Who may command any seat, not only their own (Identity.agent).
SEAT_COMMANDERS = frozenset({SUPERVISOR, SHIFT_CHIEF, ADMIN})
# permission -> roles that hold it; the adapters' routes name these. A department handler
# reads only their own department's orders (tickets.http); workflow actions are further
# limited by tickets.workflow to the role each step belongs to.
PERMISSIONS: dict[str, frozenset[str]] = {
    "calls.read": _STAFF,  # callers' numbers and names: personal data
    "seats.read": _STAFF,
    "seats.command": frozenset({OPERATOR}) | SEAT_COMMANDERS,
    "orders.read": _STAFF | {DEPARTMENT},
    "orders.open": frozenset({OPERATOR}),
    "orders.act": _WORKFLOW,
    "knowledge.read": _STAFF,  # the knowledge base (知识库)
    "knowledge.write": frozenset({ADMIN}),  # its articles (and from the shell: `hotline kb`)
    "surveys.read": frozenset({OPERATOR, SUPERVISOR, SHIFT_CHIEF, ADMIN, AUDITOR}),
    "surveys.record": frozenset({OPERATOR}),
    "kpis.read": frozenset({SUPERVISOR, SHIFT_CHIEF, ADMIN, AUDITOR}),  # per-staff grades
    "audit.read": frozenset({AUDITOR}),  # the audit log (accounts.http)
    "desk.use": frozenset({OPERATOR, SUPERVISOR}),  # the agent desk and its softphone
    # the case map (案件地图); a department handler sees only their department's orders
    "map.read": frozenset({SHIFT_CHIEF, DISPATCHER, SUPERVISOR, ADMIN, DEPARTMENT}),
    # the case workspaces (案件工作台): the queues of the workflow's back-office roles
    "work.use": frozenset({SHIFT_CHIEF, DISPATCHER, DEPARTMENT, SUPERVISOR}),
    # the staffing forecast (排班预测), and switching surge mode (突发事件模式) on and off
    "staffing.read": frozenset({SUPERVISOR, SHIFT_CHIEF, ADMIN}),
    "surge.switch": frozenset({SUPERVISOR}),
    # listen / whisper / barge on an agent's live call (监听 / 耳语 / 强插), each audited
    "spy.use": frozenset({SUPERVISOR, SHIFT_CHIEF}),
    "board.read": frozenset({SUPERVISOR, SHIFT_CHIEF, ADMIN}),  # the live wallboard
    "board.display": frozenset({ADMIN}),  # display tokens for the wall (大屏令牌)
    # quality review (质检): administrators define the scoring forms; supervisors and shift
    # chiefs (who already listen in on calls) draw samples and score them; an agent reads
    # only their own reviews; the reports grade staff by name, like kpis.read
    "quality.forms": frozenset({ADMIN}),
    "quality.review": frozenset({SUPERVISOR, SHIFT_CHIEF}),
    "quality.own": frozenset({OPERATOR, SUPERVISOR}),
    "quality.report": frozenset({SUPERVISOR, SHIFT_CHIEF, ADMIN, AUDITOR}),
    # legal holds on recordings (法律保全), placed and released by administrators; the holds
    # and the retention's deletion log read by administrators and auditors
    "recordings.hold": frozenset({ADMIN}),
    "recordings.retention": frozenset({ADMIN, AUDITOR}),
    # transcripts of calls (通话转写) and their search; unmasked only with see_phone, audited
    "transcripts.read": frozenset({OPERATOR, SUPERVISOR, SHIFT_CHIEF, ADMIN, AUDITOR}),
    "speech.status": frozenset({SUPERVISOR, SHIFT_CHIEF, ADMIN}),  # the transcription queue
    # the alert keywords (告警关键词): read by those the alerts reach, edited by supervisors
    # and administrators (each change audited)
    "speech.keywords": frozenset({SUPERVISOR, SHIFT_CHIEF, ADMIN}),
    "speech.keywords.edit": frozenset({SUPERVISOR, ADMIN}),
    # each role's home page (accounts.pages): only for those who hold the role
    **{f"home.{role}": frozenset({role}) for role in ROLES},
}

View = TypeVar("View", bound=Callable[..., Any])


def check(permission: str) -> Identity:
    """The caller, if they hold `permission`: 401 without an account, 403 without the role."""
    who = current_identity()
    if permission == PUBLIC:
        return who
    if permission not in PERMISSIONS:
        raise KeyError(f"undeclared permission {permission!r}")
    if not who.known:
        abort(401, "Authorization: sign in or send a bearer token")
    if not PERMISSIONS[permission] & set(who.roles):
        abort(403, f"{who.name} may not {permission}")
    return who


def requires(permission: str) -> Callable[[View], View]:
    def declare(view: View) -> View:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if permission != PUBLIC:  # a public route never looks at who is asking
                check(permission)
            return view(*args, **kwargs)

        guarded.access = permission  # type: ignore[attr-defined]
        return guarded  # type: ignore[return-value]

    if permission != PUBLIC and permission not in PERMISSIONS:
        raise KeyError(f"undeclared permission {permission!r}")
    return declare
