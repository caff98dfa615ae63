"""Voice prompts: Mandarin texts spoken offline by espeak-ng, replaceable by recordings.

The list of prompts and their texts is the defaults below, changed and extended by the YAML
file `ivr.prompts_file` (name: text). A prompt is `<prompts_dir>/<name>.wav` (8 kHz, 16-bit
mono). A file the operator put in place (a studio recording) is never overwritten; a file we
generated is made again when its text changes.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from core.config import Settings, read_yaml
from core.errors import ConfigError, HotlineError

PROMPTS: dict[str, str] = {
    "welcome": "您好，这里是一二三一九城市管理热线。",
    "closed": "现在是非工作时间，由值班人员为您服务。",
    "menu": "反映问题请按一，查询进度请按二，咨询请按三，紧急情况请按九。",
    "emergency": "报警请按一，火警请按二，急救请按三。",
    "invalid": "您的输入有误，请重新输入。",
    "transfer": "正在为您转接，请稍候。",
    "blocked": "您的号码暂时不能呼入本热线。",
    "ask_case": "请输入案件编号。",
    "case_unknown": "没有查到这个案件编号。",
    "case_accepted": "您反映的问题已受理，正在核实。",
    "case_dispatched": "您反映的问题已立案，正在派遣。",
    "case_handling": "您反映的问题正在处置中。",
    "case_closed": "您反映的问题已经办结。",
    "case_withdrawn": "您反映的问题已合并办理或不予受理，详情请咨询人工服务。",
    "leave_message": "现在是非工作时间，请在提示音后留言，说完请挂机。",
    "callback_offer": "如需挂机等候回电并保留排队位置，请按一。",
    "callback_ok": "已为您预约回电，轮到您时我们会给您回电，请挂机。",
    "survey_ask": "您好，这里是一二三一九城市管理热线回访。您反映的问题已经办结，请评价："
                  "非常满意请按一，满意请按二，基本满意请按三，不满意请按四，非常不满意请按五。",
    "survey_thanks": "感谢您的评价，再见。",
    "queue_next": "您是下一位，请稍候。",
    "queue_ahead": "您前面还有",
    "queue_ahead_callers": "位来电。",
    "queue_wait": "预计等待",
    "queue_wait_minutes": "分钟。",
    "surge_keys": "重听请按星号键，结束通话请按井号键，其他事项请稍候。",
    "surge_bye": "感谢您的来电，再见。",
    "num_liang": "两",
    **{f"num_{n}": "零一二三四五六七八九十"[n] for n in range(11)},
}


class PromptError(HotlineError):
    """A default prompt cannot be generated."""


def prompt_texts(settings: Settings) -> dict[str, str]:
    """Every prompt's text: the defaults, then the operator's prompts file."""
    texts = dict(PROMPTS)
    if not settings.ivr.prompts_file:
        return texts
    path = Path(settings.ivr.prompts_file)
    extra = read_yaml(path, "ivr: prompts file")
    if not isinstance(extra, dict):
        raise ConfigError(f"ivr: prompts file {path}: a mapping of prompt names to texts")
    for name, text in extra.items():
        if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]{0,39}", name):
            raise ConfigError(f"ivr: prompts file {path}: {name!r} is not a prompt name")
        if not isinstance(text, str) or not text.strip() or len(text) > 500:
            raise ConfigError(f"ivr: prompts file {path}: {name}: 1-500 characters of text")
        texts[name] = text.strip()
    return texts


def ensure_prompts(settings: Settings) -> list[str]:
    """Generate every missing prompt, and regenerate a generated one whose text changed;
    a file the operator put in place is left alone. Returns the names made."""
    texts = prompt_texts(settings)
    prompts_dir = settings.storage.prompts_dir
    prompts_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = prompts_dir / ".generated.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        manifest = {}

    def stale(name: str) -> bool:
        path = prompts_dir / f"{name}.wav"
        if not path.exists():
            return True
        made = manifest.get(name)
        return bool(made) and made["size"] == path.stat().st_size and made[
            "text"] != texts[name]

    missing = [name for name in texts if stale(name)]
    if not missing:
        return []
    for tool, package in (("espeak-ng", "espeak-ng"), ("sox", "sox")):
        if shutil.which(tool) is None:
            raise PromptError(f"ivr: {tool} is needed to make the default prompts "
                              f"(apt-get install {package}), or put recorded WAV files "
                              f"named {', '.join(missing)} in {prompts_dir}")
    for name in missing:
        path = speak(texts[name], prompts_dir / f"{name}.wav")
        manifest[name] = {"text": texts[name], "size": path.stat().st_size}
    manifest_path.write_text(json.dumps(manifest, ensure_ascii=False, indent=1),
                             encoding="utf-8")
    return missing


def speak(text: str, target: Path, voice: str = "cmn") -> Path:
    """Mandarin (or `voice`) speech as an 8 kHz 16-bit mono WAV, written atomically."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        _run(["espeak-ng", "-v", voice, "-s", "190", "-w", str(raw), text])
        partial = target.with_suffix(".partial.wav")
        _run(["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer",
              str(partial)])
        partial.replace(target)
    return target


def prompt_paths(settings: Settings) -> dict[str, str]:
    """Each prompt as Asterisk names it: its path inside the PBX, without extension."""
    root = settings.pbx.prompts_path_in_pbx.rstrip("/")
    return {name: f"{root}/{name}" for name in prompt_texts(settings)}


def _run(command: list[str]) -> None:
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        raise PromptError(f"ivr: {command[0]} failed: {proc.stderr.strip()[:200]}")
