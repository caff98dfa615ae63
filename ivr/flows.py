"""IVR flows as data: a YAML document of named nodes, checked when it is loaded.

    start: hours
    nodes:
      hours:     {type: hours, open: welcome, closed: closed}
      welcome:   {type: play, prompt: welcome, next: menu, interrupt: menu}
      menu:      {type: menu, prompt: menu, choices: {"1": report}, retries: 2,
                  invalid_prompt: invalid, fallback: report}
      report:    {type: queue, queue: intake}
      emergency: {type: transfer, number: "110", prompt: transfer}
      closed:    {type: hangup, prompt: closed}

Node types: `hours` (working time on the operator's calendar), `play`, `menu`, `progress`
(the caller keys a case number and hears where the case is, then goes to `next`), and the
endings `queue` (with an optional priority), `transfer` (to an outside number over the
trunk), `message` (a voice message after the beep that becomes a work order) and
`hangup`. A wrong flow is refused with the node and key named.

Spoken choices (智能语音导航): a menu's `say` gives, per key, the phrases a caller may say
instead of keying it (`say: {"1": [我要投诉, 投诉]}`); they are the whole grammar the
recogniser listens for at that menu. A `progress` node takes the case number as spoken
digits too, in the words of `spoken_digits` at the top of the flow (Mandarin by default:
零 一 二 ... 九, 幺 for one, 两 for two).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import phones
from core.config import read_yaml
from core.errors import ConfigError

DEFAULT_FLOW = Path(__file__).with_name("default_flow.yaml")
ENDINGS = ("queue", "transfer", "hangup", "message")
_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
_QUEUE = re.compile(r"[a-z0-9][a-z0-9_-]{1,39}")


@dataclass(frozen=True)
class Node:
    name: str
    type: str
    prompt: str | None = None
    next: str | None = None
    interrupt: str | None = None  # play: digits keyed during the prompt go to this menu
    choices: dict[str, str] = field(default_factory=dict)
    retries: int = 2
    timeout: int = 5
    invalid_prompt: str | None = None
    fallback: str | None = None
    open: str | None = None
    closed: str | None = None
    queue: str | None = None
    priority: int = 0
    announce_wait: bool = False  # queue: tell the caller how many wait ahead and how long
    number: str | None = None
    say: dict[str, tuple[str, ...]] = field(default_factory=dict)  # menu: key -> phrases


# The digits as a Mandarin caller says them; a flow in another language gives its own.
MANDARIN_DIGITS: dict[str, tuple[str, ...]] = {
    "0": ("零", "洞"), "1": ("一", "幺"), "2": ("二", "两"), "3": ("三",), "4": ("四",),
    "5": ("五",), "6": ("六",), "7": ("七",), "8": ("八",), "9": ("九",)}


@dataclass(frozen=True)
class Flow:
    start: str
    nodes: dict[str, Node]
    source: str
    spoken_digits: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: dict(MANDARIN_DIGITS))


def load_flow(path: Path | None, prompts: set[str], menu_timeout: int) -> Flow:
    source = path or DEFAULT_FLOW
    return parse_flow(read_yaml(source, "ivr: flow file"), str(source), prompts, menu_timeout)


def parse_flow(data: Any, source: str, prompts: set[str], menu_timeout: int = 5) -> Flow:
    def fail(where: str, why: str) -> ConfigError:
        return ConfigError(f"ivr: flow {source}: {where}: {why}")

    if not isinstance(data, dict) or not isinstance(data.get("nodes"), dict):
        raise fail("top level", "needs 'start' and a 'nodes' mapping")
    nodes: dict[str, Node] = {}
    for name, raw in data["nodes"].items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise fail(f"node {name!r}", "names are lower-case letters, digits and _")
        if not isinstance(raw, dict):
            raise fail(f"node {name}", "must be a mapping")
        unknown = set(raw) - {f for f in Node.__dataclass_fields__ if f != "name"}
        if unknown:
            raise fail(f"node {name}", f"unknown key {sorted(unknown)[0]!r}")
        values = dict(raw)
        if "choices" in values:
            if not isinstance(values["choices"], dict) or not values["choices"]:
                raise fail(f"node {name}", "choices must map keypad digits to nodes")
            values["choices"] = {str(k): v for k, v in values["choices"].items()}
        if "say" in values:
            values["say"] = _phrases(values["say"], f"node {name}.say", fail)
        values.setdefault("timeout", menu_timeout)
        try:
            nodes[name] = Node(name=name, **values)
        except TypeError as exc:
            raise fail(f"node {name}", str(exc)) from None
    digits = MANDARIN_DIGITS
    if "spoken_digits" in data:
        digits = _phrases(data["spoken_digits"], "spoken_digits", fail)
        if sorted(digits) != list("0123456789"):
            raise fail("spoken_digits", "needs the words for each digit 0-9")
    flow = Flow(start=data.get("start", ""), nodes=nodes, source=source,
                spoken_digits=dict(digits))
    _check(flow, prompts, fail)
    return flow


def _phrases(raw: Any, where: str, fail: Any) -> dict[str, tuple[str, ...]]:
    """{key: [phrase, ...]} with each phrase a short line of words (a string alone is one)."""
    if not isinstance(raw, dict) or not raw:
        raise fail(where, "must map keypad keys to the phrases a caller may say")
    out: dict[str, tuple[str, ...]] = {}
    for key, said in raw.items():
        said = [said] if isinstance(said, str) else said
        if (not isinstance(said, list) or not said
                or not all(isinstance(p, str) and 0 < len(p.strip()) <= 40 for p in said)):
            raise fail(where, f"{key!r}: a list of phrases of 1-40 characters")
        out[str(key)] = tuple(" ".join(p.split()) for p in said)
    return out


def spoken_phrases(flow: Flow, node: Node) -> list[str]:
    """What a caller may say at `node`: a menu's phrases, or a progress node's digits."""
    table = node.say if node.type == "menu" else flow.spoken_digits
    return [p for phrases in table.values() for p in phrases]


def _check(flow: Flow, prompts: set[str], fail: Any) -> None:
    nodes = flow.nodes
    if flow.start not in nodes:
        raise fail("start", f"no node named {flow.start!r}")

    def target(node: Node, key: str, value: str | None, required: bool = True) -> None:
        if value is None:
            if required:
                raise fail(f"node {node.name}", f"needs '{key}'")
            return
        if value not in nodes:
            raise fail(f"node {node.name}.{key}", f"no node named {value!r}")

    for node in nodes.values():
        if node.say and node.type != "menu":
            raise fail(f"node {node.name}.say", "only a menu has spoken choices")
        for key in ("prompt", "invalid_prompt"):
            prompt = getattr(node, key)
            if prompt is not None and prompt not in prompts:
                raise fail(f"node {node.name}.{key}", f"no prompt named {prompt!r}")
        if node.type == "play":
            target(node, "next", node.next)
            target(node, "interrupt", node.interrupt, required=False)
            if node.prompt is None:
                raise fail(f"node {node.name}", "needs 'prompt'")
            if node.interrupt and nodes[node.interrupt].type != "menu":
                raise fail(f"node {node.name}.interrupt", "must name a menu node")
        elif node.type == "menu":
            if node.prompt is None:
                raise fail(f"node {node.name}", "needs 'prompt'")
            for digit, goes in node.choices.items():
                if not re.fullmatch(r"[0-9*#]", digit):
                    raise fail(f"node {node.name}.choices", f"{digit!r} is not one keypad key")
                target(node, f"choices.{digit}", goes)
            if not node.choices:
                raise fail(f"node {node.name}", "needs 'choices'")
            target(node, "fallback", node.fallback)
            for digit in node.say:
                if digit not in node.choices:
                    raise fail(f"node {node.name}.say", f"{digit!r} is not one of its choices")
            heard = [p for phrases in node.say.values() for p in phrases]
            if len(set(heard)) < len(heard):
                raise fail(f"node {node.name}.say", "a phrase is given for two choices")
            if not (0 <= node.retries <= 9 and 1 <= node.timeout <= 60):
                raise fail(f"node {node.name}", "retries 0-9 and timeout 1-60 seconds")
        elif node.type == "progress":
            target(node, "next", node.next)
            if node.prompt is None:
                raise fail(f"node {node.name}", "needs 'prompt' (asking for the number)")
            if not 1 <= node.timeout <= 60:
                raise fail(f"node {node.name}", "timeout 1-60 seconds")
        elif node.type == "hours":
            target(node, "open", node.open)
            target(node, "closed", node.closed)
        elif node.type == "queue":
            if node.queue is None or not _QUEUE.fullmatch(node.queue) or node.queue == "general":
                raise fail(f"node {node.name}.queue", "a queue name is needed")
            if not 0 <= node.priority <= 100:
                raise fail(f"node {node.name}.priority", "0-100")
            if not isinstance(node.announce_wait, bool):
                raise fail(f"node {node.name}.announce_wait", "true or false")
        elif node.type == "transfer":
            if node.number is None or not phones.normalise_or_empty(str(node.number)):
                raise fail(f"node {node.name}.number", "a number to dial, e.g. 110")
        elif node.type == "message":
            if node.prompt is None:
                raise fail(f"node {node.name}", "needs 'prompt' (inviting the message)")
            if not 5 <= node.timeout <= 300:
                raise fail(f"node {node.name}.timeout", "5-300 seconds of message")
        elif node.type != "hangup":
            raise fail(f"node {node.name}.type",
                       f"{node.type!r} is not one of hours, play, menu, progress, "
                       f"{', '.join(ENDINGS)}")
