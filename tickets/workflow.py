"""The shared case workflow (案件处置流程) as an explicit state machine. Pure: no I/O.

    受理 intake -> 核实 verifying -> 立案 opened -> 派遣 dispatched -> 处置 handling ->
    反馈 reported -> 核查 checking -> checked -> 结案 closed -> 回访评价 evaluated

with the exception paths: 回退 return (wrongly dispatched, back for re-dispatch), 返工 rework
(failed check, counted), 延期 extension and 挂账 park (requested by the department; granted
or refused, 驳回, by the dispatcher, who follows the department's work, or by the shift
chief above them), 缓办 defer, 作废 void, 并单 merge, 督办 supervise; and a consultation answered
on the call closes at once (首呼解决, first-call resolution).

Each action names the states it may start from, the state it leads to (None: it stays) and
the roles allowed to take it. What the table cannot say, since it knows no history, tickets.
service adds: a refusal answers a request still pending (`REQUESTS`), and so does a
dispatcher's grant or park (an approval); the shift chief may also extend or park on their
own decision.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import HotlineError

# Roles (角色)
OPERATOR = "operator"  # 受理员, hotline intake operator
SUPERVISOR = "supervisor"  # 监督员, field supervisor
SHIFT_CHIEF = "shift_chief"  # 值班长
DISPATCHER = "dispatcher"  # 派遣员
DEPARTMENT = "department"  # 专业部门 / 处置单位
SYSTEM = "system"  # the hotline itself (surveys, deadlines)
ROLES = (OPERATOR, SUPERVISOR, SHIFT_CHIEF, DISPATCHER, DEPARTMENT, SYSTEM)

STATES = ("intake", "verifying", "opened", "dispatched", "handling", "reported", "checking",
          "checked", "closed", "evaluated", "parked", "deferred", "voided", "merged")
FINAL = ("voided", "merged")  # nothing leaves these; closed and evaluated may be reopened
OPEN = tuple(s for s in STATES if s not in (*FINAL, "closed", "evaluated"))


class WorkflowError(HotlineError):
    """A forbidden transition or a role that may not take the action; says which."""

    status = 409


class RoleError(WorkflowError):
    """The action exists but is not this role's to take."""

    status = 403


@dataclass(frozen=True)
class Action:
    name: str
    sources: tuple[str, ...]
    target: str | None
    roles: tuple[str, ...]
    title: str


ACTIONS: dict[str, Action] = {a.name: a for a in (
    Action("request_verification", ("intake",), "verifying", (OPERATOR,), "转核实"),
    Action("verified", ("verifying",), "intake", (SUPERVISOR,), "核实反馈"),
    Action("open", ("intake", "verifying"), "opened", (SHIFT_CHIEF,), "立案"),
    Action("resolve_on_call", ("intake",), "closed", (OPERATOR,), "直接办结"),
    Action("dispatch", ("opened",), "dispatched", (DISPATCHER,), "派遣"),
    Action("sign", ("dispatched",), "handling", (DEPARTMENT,), "签收"),
    Action("return", ("dispatched", "handling"), "opened", (DEPARTMENT,), "回退"),
    Action("request_extension", ("handling",), None, (DEPARTMENT,), "申请延期"),
    Action("grant_extension", ("handling",), None, (SHIFT_CHIEF, DISPATCHER), "批准延期"),
    Action("refuse_extension", ("handling",), None, (SHIFT_CHIEF, DISPATCHER), "驳回延期"),
    Action("request_park", ("handling",), None, (DEPARTMENT,), "申请挂账"),
    Action("feedback", ("handling",), "reported", (DEPARTMENT,), "处置反馈"),
    Action("request_check", ("reported",), "checking", (DISPATCHER,), "转核查"),
    Action("check_passed", ("checking",), "checked", (SUPERVISOR,), "核查通过"),
    Action("rework", ("checking",), "handling", (SUPERVISOR,), "返工"),
    Action("close", ("checked",), "closed", (SHIFT_CHIEF,), "结案"),
    Action("evaluate", ("closed",), "evaluated", (OPERATOR, SYSTEM), "回访评价"),
    Action("reopen", ("closed", "evaluated"), "handling", (SHIFT_CHIEF, SYSTEM), "不满意重办"),
    Action("park", ("handling",), "parked", (SHIFT_CHIEF, DISPATCHER), "挂账"),
    Action("refuse_park", ("handling",), None, (SHIFT_CHIEF, DISPATCHER), "驳回挂账"),
    Action("unpark", ("parked",), "handling", (SHIFT_CHIEF,), "解除挂账"),
    Action("defer", ("opened",), "deferred", (SHIFT_CHIEF,), "缓办"),
    Action("resume", ("deferred",), "opened", (SHIFT_CHIEF,), "恢复办理"),
    Action("void", ("intake", "verifying", "opened"), "voided", (SHIFT_CHIEF,), "作废"),
    Action("merge", ("intake", "verifying", "opened"), "merged", (SHIFT_CHIEF,), "并单"),
    Action("supervise", OPEN, None, (SHIFT_CHIEF, SYSTEM), "督办"),
)}

# A department's request (申请) and the actions that answer it, approving or refusing.
REQUESTS: dict[str, tuple[str, str]] = {
    "request_extension": ("grant_extension", "refuse_extension"),
    "request_park": ("park", "refuse_park"),
}
ANSWERS: dict[str, str] = {answer: asked for asked, answers in REQUESTS.items()
                           for answer in answers}
# Answers a role may give only to a request pending: refusing anything, and the
# dispatcher's approvals (the shift chief extends or parks on their own decision too).
NEEDS_REQUEST: dict[str, tuple[str, ...]] = {
    "refuse_extension": (DISPATCHER, SHIFT_CHIEF), "refuse_park": (DISPATCHER, SHIFT_CHIEF),
    "grant_extension": (DISPATCHER,), "park": (DISPATCHER,),
}


def apply(state: str, action_name: str, role: str) -> str:
    """The state after `action_name` taken by `role` from `state`, or WorkflowError."""
    action = ACTIONS.get(action_name)
    if action is None:
        raise WorkflowError(f"workflow: no action {action_name[:40]!r}")
    if role not in action.roles:
        raise RoleError(
            f"workflow: {action.name} ({action.title}) is for {', '.join(action.roles)}, "
            f"not {role[:40]!r}")
    if state not in action.sources:
        raise WorkflowError(
            f"workflow: {action.name} ({action.title}) cannot be taken from {state!r}; "
            f"only from {', '.join(action.sources)}")
    return action.target or state


def allowed(state: str, role: str) -> list[str]:
    """Actions `role` may take on an order in `state` (for desks to offer)."""
    return [a.name for a in ACTIONS.values() if state in a.sources and role in a.roles]


def check_request(action_name: str, role: str, pending: str) -> None:
    """WorkflowError if `action_name` taken by `role` must answer a department's request
    (`NEEDS_REQUEST`) and the request pending on the order (`pending`: request_extension,
    request_park, "" for none) is not the one it answers."""
    if role not in NEEDS_REQUEST.get(action_name, ()):
        return
    asked = ANSWERS[action_name]
    if pending != asked:
        action, request = ACTIONS[action_name], ACTIONS[asked]
        raise WorkflowError(
            f"workflow: {action.name} ({action.title}) by the {role} answers the "
            f"department's {request.name} ({request.title}), and none is pending")
