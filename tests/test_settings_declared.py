"""Each setting is declared once (core.config): its bounds refuse what no operator means,
naming the key, and the rules of the work orders and the KPIs take the declared defaults."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.config import load_settings
from core.errors import ConfigError
from reports import kpis
from telephony import measures
from tests.conftest import make_settings
from tickets.service import Policy


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"HOTLINE_TICKETS_YELLOW_PERCENT": "0"}, "tickets.yellow_percent"),
        ({"HOTLINE_TICKETS_YELLOW_PERCENT": "100"}, "tickets.yellow_percent"),
        ({"HOTLINE_TICKETS_SURVEY_CALL_ATTEMPTS": "0"}, "tickets.survey_call_attempts"),
        ({"HOTLINE_TICKETS_REOPEN_LIMIT": "-1"}, "tickets.reopen_limit"),
        ({"HOTLINE_TICKETS_DUPLICATE_DISTANCE_M": "-5"}, "tickets.duplicate_distance_m"),
        ({"HOTLINE_TICKETS_REOPEN_RATINGS": "4,6"}, "tickets.reopen_ratings"),
        ({"HOTLINE_EXCHANGE_MAX_ATTEMPTS": "0"}, "exchange.max_attempts"),
        ({"HOTLINE_EXCHANGE_RETRY_SECONDS": "0"}, "exchange.retry_seconds"),
        ({"HOTLINE_HOTLINE_REPEAT_WINDOW_HOURS": "0"}, "hotline.repeat_window_hours"),
        ({"HOTLINE_HOTLINE_SHORT_ABANDON_SECONDS": "-1"}, "hotline.short_abandon_seconds"),
        ({"HOTLINE_IVR_MENU_TIMEOUT_SECONDS": "0"}, "ivr.menu_timeout_seconds"),
        ({"HOTLINE_SEATS_AUTO_PAUSE_AFTER_UNANSWERED": "-2"},
         "seats.auto_pause_after_unanswered"),
        ({"HOTLINE_PBX_BOOT_TIMEOUT": "0"}, "pbx.boot_timeout"),
    ],
)
def test_a_value_out_of_bounds_names_its_key(tmp_path: Path, env: dict[str, str],
                                             names: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_settings(tmp_path, **env)
    message = str(caught.value)
    assert message.startswith(f"config: {names} ") and "(from $HOTLINE_" in message


def test_a_file_value_of_the_wrong_kind_names_key_and_file(tmp_path: Path) -> None:
    config = tmp_path / "hotline.toml"
    config.write_text("[tickets]\nreopen_limit = true\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(config, {"HOTLINE_STORAGE_DATA_DIR": str(tmp_path)})
    assert "tickets.reopen_limit must be an integer, got True" in str(caught.value)
    assert str(config) in str(caught.value)


def test_a_changed_copy_of_the_settings_is_checked_too(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    quick = replace(settings.tickets, survey_after_workdays=0, survey_hours="00:00-24:00")
    assert (quick.survey_after_workdays, quick.survey_hours) == (0, "00:00-24:00")
    with pytest.raises(ValidationError):
        replace(settings.tickets, yellow_percent=120)


def test_the_rules_take_the_declared_defaults(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    assert Policy() == Policy.from_settings(settings)
    assert Policy().yellow_percent == 80 and Policy().reopen_ratings == (4, 5)
    assert Policy().timezone == "Asia/Shanghai" and Policy().repeat_window_hours == 24
    assert kpis.DEFAULT_TIMEZONE == "Asia/Shanghai"
    assert kpis.DEFAULT_REPEAT_LOOKBACK == measures.DEFAULT_REPEAT_LOOKBACK \
        == timedelta(hours=24)
