"""Runs an IVR flow for one call and tells the dialplan where the call goes next.

The outcome is left in channel variables the dialplan reads after AGI() returns:
HOTLINE_QUEUE and HOTLINE_PRIORITY (to a queue), HOTLINE_TRANSFER (an outside number over
the trunk) or HOTLINE_ACTION=hangup. Each node visited is set as HOTLINE_IVR_NODE, so the
call's IVR path is read from AMI like everything else; a menu choice or case number the
caller said rather than keyed is marked by HOTLINE_SPOKEN (the node's name) just before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from core import phones
from ivr.fastagi import AgiSession
from ivr.flows import Flow, Node, spoken_phrases
from ivr.spoken import CallEar, choice_of, digits_of
from recordings.speech import Utterance

MAX_STEPS = 60  # a flow that loops (play -> play ...) still ends


@dataclass(frozen=True)
class Decision:
    kind: str  # queue | transfer | hangup
    target: str = ""
    priority: int = 0
    node: str = ""


# Where a case is, in words a citizen hears: workflow state -> prompt.
CASE_PROMPTS = {
    "intake": "case_accepted", "verifying": "case_accepted",
    "opened": "case_dispatched", "dispatched": "case_dispatched", "deferred": "case_dispatched",
    "handling": "case_handling", "reported": "case_handling", "checking": "case_handling",
    "checked": "case_handling", "parked": "case_handling",
    "closed": "case_closed", "evaluated": "case_closed",
    "voided": "case_withdrawn", "merged": "case_withdrawn",
}
CASE_NUMBER_DIGITS = 12  # YYYYMMDD and the day's count; a storm day's later ones are longer
MAX_CASE_DIGITS = 16
MORE_DIGITS_MS = 2000  # after the 12th digit, how long a caller may take to key a 13th


async def _no_case(_number: str) -> str | None:
    return None


async def _no_message() -> None:
    return None


@dataclass(frozen=True)
class CallContext:
    """What the flow may ask about the caller, the time and the cases."""

    working_time: bool
    blocked: bool = False
    priority_bonus: int = 0
    case_state: Callable[[str], Awaitable[str | None]] = _no_case
    message_path: str = ""  # where, inside the PBX, a voice message of this call is recorded
    message_left: Callable[[], Awaitable[None]] = _no_message
    surge: str = ""  # the surge announcement on now (inside the PBX), "" when none
    ear: CallEar | None = None  # spoken choices: None, keys only


ANY_KEY = "0123456789*#"
KEY_SLICE_MS = 200  # keys are listened for in slices this long while an answer is recognised
EARLY_KEY_GRACE_S = 0.05  # lookups quicker than this start the first prompt with no slice
DIGIT_KEYS = "0123456789"


# Surge mode (突发事件模式): the announcement before the menu, its keys and how often it
# may be heard again; the step names are what the call's IVR path records.
SURGE_REPEAT_KEY, SURGE_LEAVE_KEY = "*", "#"
SURGE_KEYS_WAIT_MS = 3000
SURGE_MAX_HEARD = 4


async def run_flow(session: AgiSession, flow: Flow, context: CallContext,
                   prompt_path: dict[str, str], default_queue: str,
                   early_key: str = "") -> Decision:
    """The call's way through `flow`; `early_key` is a key the caller pressed before the
    first prompt began (`key_pressed_while`): it answers that prompt as if pressed during it."""
    if context.blocked:
        decision = Decision("hangup", node="blocked")
        await _visit(session, "blocked")
        await session.stream_file(prompt_path["blocked"])
    else:
        left = await _surge(session, context.surge, prompt_path) if context.surge else None
        decision = left or await _walk(session, flow, context, prompt_path, default_queue,
                                       "" if context.surge else early_key)
    await _decide(session, decision)
    return decision


async def key_pressed_while(session: AgiSession, pending: asyncio.Future[Any]) -> str:
    """The key the caller presses while `pending` (the call's lookups) runs; "" if none.
    Asterisk drops a key pressed while AGI waits for a command, so a caller who keys
    before a late first prompt would be lost in the menu: keys are waited for in short
    slices meanwhile, once `pending` has taken longer than a moment. If the caller hangs
    up meanwhile, `pending` is cancelled: its result is nobody's."""
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(pending), EARLY_KEY_GRACE_S)
        while not pending.done():
            digit = await session.wait_for_digit(KEY_SLICE_MS)
            if digit:
                return digit
        return ""
    except BaseException:
        pending.cancel()
        raise


async def _walk(session: AgiSession, flow: Flow, context: CallContext,
                prompt_path: dict[str, str], default_queue: str,
                early_key: str = "") -> Decision:
    node = flow.nodes[flow.start]
    keyed = ""  # a digit keyed during a prompt, handed to the menu that follows
    early = early_key  # keyed before any prompt: it answers the first one only
    for _ in range(MAX_STEPS):
        await _visit(session, node.name)
        if node.type == "hours":
            node = flow.nodes[node.open if context.working_time else node.closed]  # type: ignore[index]
            continue
        pressed, early = early, ""
        if node.type == "play":
            escape = "".join(flow.nodes[node.interrupt].choices) if node.interrupt else ""
            digit = (pressed if pressed and pressed in escape else
                     await session.stream_file(prompt_path[node.prompt], escape))  # type: ignore[index]
            if digit and node.interrupt:
                keyed, node = digit, flow.nodes[node.interrupt]
            else:
                node = flow.nodes[node.next]  # type: ignore[index]
        elif node.type == "menu":
            node, keyed = await _menu(session, node, flow, keyed or pressed, prompt_path,
                                      _listening(context, node)), ""
        elif node.type == "progress":
            await _progress(session, node, flow, context, prompt_path)
            node = flow.nodes[node.next]  # type: ignore[index]
        else:
            if node.prompt:
                await session.stream_file(prompt_path[node.prompt])
            if node.type == "queue":
                queue = node.queue or default_queue
                if node.announce_wait:
                    await _announce_wait(session, queue, prompt_path)
                return Decision("queue", queue, node.priority + context.priority_bonus,
                                node.name)
            if node.type == "transfer":  # 0451-12345678 is dialled as 045112345678
                dial = phones.national(phones.normalise(str(node.number)))
                return Decision("transfer", dial, node=node.name)
            if node.type == "message":
                await _message(session, node, context)
            return Decision("hangup", node=node.name)
    return Decision("queue", default_queue, context.priority_bonus, "loop-guard")


async def _surge(session: AgiSession, announcement: str,
                 prompt_path: dict[str, str]) -> Decision | None:
    """The incident's announcement, then how to hear it again (*) or leave (#); any other
    key or none goes on to the menu. A caller who leaves hears goodbye and is hung up on."""
    keys = SURGE_REPEAT_KEY + SURGE_LEAVE_KEY
    for heard in range(SURGE_MAX_HEARD):
        await _visit(session, "surge" if heard == 0 else "surge_repeat")
        digit = await session.stream_file(announcement, keys)
        if digit is None:
            digit = await session.stream_file(prompt_path["surge_keys"], keys)
        if digit is None:
            digit = await session.wait_for_digit(SURGE_KEYS_WAIT_MS)
        if digit == SURGE_LEAVE_KEY:
            await _visit(session, "surge_leave")
            await session.stream_file(prompt_path["surge_bye"])
            return Decision("hangup", node="surge_leave")
        if digit != SURGE_REPEAT_KEY:
            return None
    return None


def _listening(context: CallContext, node: Node) -> CallEar | None:
    """The call's ear when this node may be answered by voice and the recogniser is ready:
    otherwise the node runs on keys exactly as it always has."""
    ear = context.ear
    if ear is None or not ear.ready():
        return None
    return ear if node.type != "menu" or node.say else None


async def _menu(session: AgiSession, node: Node, flow: Flow, keyed: str,
                prompt_path: dict[str, str], ear: CallEar | None = None) -> Node:
    choice = keyed
    for attempt in range(node.retries + 1):
        if (attempt or not choice) and ear is not None:
            choice, spoken = await _ask_menu(session, node, prompt_path, ear)
            if spoken:  # the call's IVR path tells the desk this choice was said
                await session.set_variable("HOTLINE_SPOKEN", node.name)
        elif attempt or not choice:
            choice = await session.get_data(prompt_path[node.prompt], node.timeout * 1000, 1)  # type: ignore[index]
        await session.set_variable("HOTLINE_MENU_CHOICE", choice or "timeout")
        if choice in node.choices:
            return flow.nodes[node.choices[choice]]
        if attempt < node.retries and node.invalid_prompt:
            await session.stream_file(prompt_path[node.invalid_prompt])
    return flow.nodes[node.fallback]  # type: ignore[index]


async def _ask_menu(session: AgiSession, node: Node, prompt_path: dict[str, str],
                    ear: CallEar) -> tuple[str, bool]:
    """The menu prompt, then the caller's answer by key or voice: (choice, spoken). A key
    during the prompt or the listening wins at once; an answer not recognised leaves the
    rest of the menu's time for a key, as a keyed menu would."""
    digit = await session.stream_file(prompt_path[node.prompt], ANY_KEY)  # type: ignore[index]
    if digit:
        return digit, False
    wait_ms = node.timeout * 1000
    digit, elapsed_ms = await _listen(session, ear, wait_ms)
    if digit:
        return digit, False
    phrases = [p for said in node.say.values() for p in said]
    heard, digit, waited_ms = await _hear_or_key(session, ear, phrases)
    if digit:
        return digit, False
    choice = choice_of(heard, node.say, ear.min_confidence)
    if choice is not None:
        return choice, True
    elapsed_ms += waited_ms
    if wait_ms > elapsed_ms:
        return await session.wait_for_digit(wait_ms - elapsed_ms) or "", False
    return "", False


async def _listen(session: AgiSession, ear: CallEar, wait_ms: int) -> tuple[str | None, int]:
    """Record the caller's answer for up to `wait_ms`: the key that ended it, if any, and
    how long the listening took (what was kept plus the pause Asterisk trimmed)."""
    digit, kept_ms = await session.listen(ear.next_answer(), ANY_KEY, wait_ms,
                                          ear.silence_seconds)
    trimmed_ms = (ear.silence_seconds - 1) * 1000 if kept_ms < wait_ms else 0
    return digit, min(wait_ms, kept_ms + trimmed_ms)


async def _hear_or_key(session: AgiSession, ear: CallEar,
                       phrases: list[str]) -> tuple[Utterance | None, str | None, int]:
    """The recognised answer, unless a key comes first: while the answer is recognised
    Asterisk would drop a key pressed between AGI commands, so keys are waited for in short
    slices meanwhile. (heard, key, milliseconds waited for keys)."""
    hearing = asyncio.ensure_future(ear.hear(phrases))
    waited_ms = 0
    try:
        while not hearing.done():
            digit = await session.wait_for_digit(KEY_SLICE_MS)
            waited_ms += KEY_SLICE_MS
            if digit:
                return None, digit, waited_ms
        return hearing.result(), None, waited_ms
    finally:
        hearing.cancel()  # (a no-op once heard)


async def _keys(session: AgiSession, first_wait_ms: int, wait_ms: int, most: int) -> str:
    """Digits keyed one by one (as GET DATA collects them): up to `most`, until # or a
    pause of `wait_ms` (`first_wait_ms` for the first)."""
    got, wait = "", first_wait_ms
    while len(got) < most and wait > 0:
        digit = await session.wait_for_digit(wait)
        if digit is None or digit == "#":
            break
        got, wait = got + digit, wait_ms
    return got


async def _ask_case(session: AgiSession, node: Node, flow: Flow, prompt_path: dict[str, str],
                    ear: CallEar) -> tuple[str, bool]:
    """The case-number prompt answered by keys or by the digits said: (number, spoken)."""
    wait_ms = node.timeout * 1000
    digit = await session.stream_file(prompt_path[node.prompt], DIGIT_KEYS)  # type: ignore[index]
    if not digit:
        digit, elapsed_ms = await _listen(session, ear, wait_ms)
    if not digit:
        heard, digit, waited_ms = await _hear_or_key(session, ear, spoken_phrases(flow, node))
        said = digits_of(heard, flow.spoken_digits, ear.min_confidence)
        if CASE_NUMBER_DIGITS <= len(said) <= MAX_CASE_DIGITS:
            return said, True
        if not digit:  # nothing said for sure: the rest of the time is for keys
            return await _keys(session, wait_ms - elapsed_ms - waited_ms, wait_ms,
                               CASE_NUMBER_DIGITS), False
    if not digit.isdigit():
        return "", False
    return digit + await _keys(session, wait_ms, wait_ms, CASE_NUMBER_DIGITS - 1), False


async def _progress(session: AgiSession, node: Node, flow: Flow, context: CallContext,
                    prompt_path: dict[str, str]) -> None:
    """The caller keys a case number and hears where the case stands (办理进度查询).

    Most numbers have 12 digits and are looked up as soon as the 12th is keyed and a
    moment passes; a number given out after the 9,999th order of a day has more, which the
    caller keys on without a pause (or ends with #)."""
    ear, spoken = _listening(context, node), False
    if ear is None:
        number = await session.get_data(prompt_path[node.prompt], node.timeout * 1000,  # type: ignore[index]
                                        CASE_NUMBER_DIGITS)
    else:
        number, spoken = await _ask_case(session, node, flow, prompt_path, ear)
        if spoken:
            await session.set_variable("HOTLINE_SPOKEN", node.name)
    while not spoken and CASE_NUMBER_DIGITS <= len(number) < MAX_CASE_DIGITS:
        digit = await session.wait_for_digit(MORE_DIGITS_MS)
        if digit is None or not digit.isdigit():  # a pause, or # to end
            break
        number += digit
    await session.set_variable("HOTLINE_CASE_QUERY", number)
    state = (await context.case_state(number)
             if CASE_NUMBER_DIGITS <= len(number) <= MAX_CASE_DIGITS else None)
    await session.set_variable("HOTLINE_CASE_STATE", state or "unknown")
    await session.stream_file(prompt_path[CASE_PROMPTS.get(state or "", "case_unknown")])


def estimated_wait_minutes(ahead: int, average_hold_seconds: int, agents: int) -> int:
    """Whole minutes a caller joining behind `ahead` others may wait: each of them, and the
    caller, takes the queue's average hold time, shared by the logged-in agents; 0 when the
    queue has no history yet (nothing honest to say)."""
    if average_hold_seconds <= 0:
        return 0
    return math.ceil(average_hold_seconds * (ahead + 1) / max(1, agents) / 60)


def number_prompts(n: int) -> list[str]:
    """Prompt names that say 0-99 in Mandarin, e.g. 23 -> 二 十 三; 2 alone is 两 (before a
    measure word: 两位, 两分钟). Larger numbers are said as 99."""
    n = max(0, min(n, 99))
    if n == 2:
        return ["num_liang"]
    tens, ones = divmod(n, 10)
    if tens == 0:
        return [f"num_{ones}"]
    said = ([] if tens == 1 else [f"num_{tens}"]) + ["num_10"]
    return said + ([f"num_{ones}"] if ones else [])


async def _announce_wait(session: AgiSession, queue: str, prompt_path: dict[str, str]) -> None:
    """位置播报: how many callers wait ahead and, when the queue has a history, about how
    long (预计等待); both left in HOTLINE_QUEUE_AHEAD / HOTLINE_WAIT_MINUTES."""
    ahead = _whole(await session.evaluate(f"${{QUEUE_WAITING_COUNT({queue})}}"))
    agents = _whole(await session.evaluate(f"${{QUEUE_MEMBER({queue},logged)}}"))
    await session.evaluate(f"${{QUEUE_VARIABLES({queue})}}")  # sets QUEUEHOLDTIME
    minutes = estimated_wait_minutes(ahead, _whole(await session.get_variable("QUEUEHOLDTIME")),
                                     agents)
    await session.set_variable("HOTLINE_QUEUE_AHEAD", str(ahead))
    await session.set_variable("HOTLINE_WAIT_MINUTES", str(minutes))
    said = (["queue_next"] if ahead == 0 else
            ["queue_ahead", *number_prompts(ahead), "queue_ahead_callers"])
    if minutes:
        said += ["queue_wait", *number_prompts(minutes), "queue_wait_minutes"]
    for name in said:
        await session.stream_file(prompt_path[name])


def _whole(text: str) -> int:
    return int(text) if text.strip().isdigit() else 0


async def _message(session: AgiSession, node: Node, context: CallContext) -> None:
    """Record a voice message (留言); it becomes a work order even if the caller simply
    hangs up when done, which is what most do."""
    try:
        await session.record_file(context.message_path, node.timeout * 1000)
    finally:
        await context.message_left()


async def _visit(session: AgiSession, name: str) -> None:
    await session.set_variable("HOTLINE_IVR_NODE", name)


async def _decide(session: AgiSession, decision: Decision) -> None:
    if decision.kind == "queue":
        await session.set_variable("HOTLINE_QUEUE", decision.target)
        await session.set_variable("HOTLINE_PRIORITY", str(decision.priority))
    elif decision.kind == "transfer":
        await session.set_variable("HOTLINE_TRANSFER", decision.target)
    else:
        await session.set_variable("HOTLINE_ACTION", "hangup")
