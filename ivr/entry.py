"""The 12319 entry flow: welcome, the main menu, and the queue the caller is routed to.

The dialplan reads HOTLINE_QUEUE when this returns; a caller who keys nothing valid after
the retries goes to the default queue, as does every caller when this server is down.
"""

from __future__ import annotations

from hotline.config import Settings
from ivr.fastagi import AgiSession
from ivr.prompts import prompt_path


async def entry(session: AgiSession, settings: Settings) -> str:
    """Run the menu; returns the queue chosen."""
    ivr = settings.ivr
    menu = dict(ivr.menu)
    queue = settings.hotline.default_queue
    choice = ""
    # A caller who knows the menu may key the choice during the welcome.
    await session.set_variable("HOTLINE_IVR_NODE", "welcome")
    choice = await session.stream_file(prompt_path(settings, "welcome"), "".join(menu)) or ""
    for attempt in range(ivr.menu_retries + 1):
        if attempt or not choice:
            await session.set_variable("HOTLINE_IVR_NODE", "menu")
            choice = await session.get_data(prompt_path(settings, "menu"),
                                            ivr.menu_timeout_seconds * 1000, 1)
        if choice in menu:
            queue = menu[choice]
            break
        if choice and attempt < ivr.menu_retries:
            await session.stream_file(prompt_path(settings, "invalid"))
    await session.set_variable("HOTLINE_MENU_CHOICE", choice)
    await session.set_variable("HOTLINE_QUEUE", queue)
    await session.set_variable("HOTLINE_IVR_NODE", "transfer")
    await session.stream_file(prompt_path(settings, "transfer"))
    return queue
