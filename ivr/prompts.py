"""Voice prompts: Mandarin defaults spoken offline by espeak-ng, replaceable by recordings.

A prompt is `<prompts_dir>/<name>.wav` (8 kHz, 16-bit mono). A file already there (a studio
recording put in place by the operator) is never overwritten; only missing prompts are made.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from hotline.config import Settings
from hotline.errors import HotlineError

PROMPTS: dict[str, str] = {
    "welcome": "您好，这里是一二三一九城市管理热线。",
    "menu": "反映问题或投诉，请按一。",
    "invalid": "您的输入有误，请重新输入。",
    "transfer": "正在为您转接人工服务，请稍候。",
}


class PromptError(HotlineError):
    """A default prompt cannot be generated."""


def ensure_prompts(prompts_dir: Path) -> list[str]:
    """Generate every missing default prompt; returns the names made."""
    prompts_dir.mkdir(parents=True, exist_ok=True)
    missing = [name for name in PROMPTS if not (prompts_dir / f"{name}.wav").exists()]
    if not missing:
        return []
    for tool, package in (("espeak-ng", "espeak-ng"), ("sox", "sox")):
        if shutil.which(tool) is None:
            raise PromptError(f"ivr: {tool} is needed to make the default prompts "
                              f"(apt-get install {package}), or put recorded WAV files "
                              f"named {', '.join(missing)} in {prompts_dir}")
    for name in missing:
        speak(PROMPTS[name], prompts_dir / f"{name}.wav")
    return missing


def speak(text: str, target: Path, voice: str = "cmn") -> Path:
    """Mandarin (or `voice`) speech as an 8 kHz 16-bit mono WAV, written atomically."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        _run(["espeak-ng", "-v", voice, "-s", "170", "-w", str(raw), text])
        partial = target.with_suffix(".partial.wav")
        _run(["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer",
              str(partial)])
        partial.replace(target)
    return target


def prompt_path(settings: Settings, name: str) -> str:
    """The prompt as Asterisk names it: its path inside the PBX, without extension."""
    if name not in PROMPTS:
        raise KeyError(name)
    return f"{settings.pbx.prompts_path_in_pbx.rstrip('/')}/{name}"


def _run(command: list[str]) -> None:
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        raise PromptError(f"ivr: {command[0]} failed: {proc.stderr.strip()[:200]}")
