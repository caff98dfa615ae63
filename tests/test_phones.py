"""Citizens' phone numbers: one stored form (E.164), whatever the network or a person wrote,
and the forms people read, mask and the trunk dials. Expected values are written by hand."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from core import phones
from core.db import alembic_config, make_engine, session_factory, transaction, upgrade
from telephony import screening
from tickets import service

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)


@pytest.mark.parametrize(("written", "stored"), [
    ("+86 451 8888 8888", "+8645188888888"),  # Harbin, as an app writes it
    ("0451-88888888", "+8645188888888"),  # as a person writes it
    ("045188888888", "+8645188888888"),  # as the trunk sends it
    ("0086 451 8888 8888", "+8645188888888"),
    ("138 0013 8000", "+8613800138000"),
    ("+86 138-0013-8000", "+8613800138000"),
    ("(010) 1234 5678", "+861012345678"),  # Beijing
    ("+1 650 253 0000", "+16502530000"),  # a visitor's foreign mobile
    ("１３８－００１３－８０００", "+8613800138000"),  # typed on a Chinese keyboard
    ("110", "110"), ("12319", "12319"), ("95598", "95598"),  # short numbers stay
    ("8001", "8001"),  # an extension
    ("88888888", "88888888"),  # a local number without its area code: kept as given
])
def test_every_form_of_a_number_is_stored_once(written: str, stored: str) -> None:
    assert phones.normalise(written) == stored


@pytest.mark.parametrize("garbage", ["", "anonymous", "<unknown>", "12", "1" * 21, "+12",
                                     "138-0013-800O", "13800138000;drop", "\x00110"])
def test_what_is_not_a_number_is_refused(garbage: str) -> None:
    with pytest.raises(phones.PhoneError):
        phones.normalise(garbage)
    assert phones.normalise_or_empty(garbage) == ""


def test_answers_are_the_same_asked_again_and_a_refusal_is_not_remembered() -> None:
    """The answers are kept per process: the second asking gives the first's answer, a
    refused text is refused again, and a long text (kept out of the memory) is still read."""
    for _ in range(2):
        assert phones.normalise("138 0013 8000") == "+8613800138000"
        assert phones.national("+8645188888888") == "045188888888"
        with pytest.raises(phones.PhoneError):
            phones.normalise("+12")
    spaced = " ".join("13800138000")
    assert phones.normalise(f"{spaced}{' ' * 60}") == "+8613800138000"
    with pytest.raises(phones.PhoneError):
        phones.normalise(f"{spaced}{' ' * 60}x")


@pytest.mark.parametrize(("stored", "national", "masked"), [
    ("+8613800138000", "13800138000", "138****8000"),
    ("+8645188888888", "045188888888", "045*****8888"),
    ("+861012345678", "01012345678", "010****5678"),
    ("+16502530000", "0016502530000", "001******0000"),  # dialled with China's 00
    ("12319", "12319", "***19"),  # a short number keeps its last two digits
    ("88888888", "88888888", "8***8888"),
    ("110", "110", "***"),
    ("", "", ""),
])
def test_people_read_and_the_trunk_dials_the_national_form(stored: str, national: str,
                                                          masked: str) -> None:
    assert phones.national(stored) == national
    assert phones.mask(stored) == masked


def test_the_same_caller_in_three_forms_is_one_caller(database_url: str) -> None:
    """Screening and an order's history see one citizen, whichever form the number came in."""
    engine = make_engine(database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        screening.add_entry(session, "+86 451 8888 8888", "vip", now=NOW)
        first = service.open_order(session, appeal_type="complaint", channel="phone",
                                   description="井盖丢失", actor="受理员",
                                   citizen_phone="0451-88888888", now=NOW)
        second = service.open_order(session, appeal_type="complaint", channel="phone",
                                    description="井盖还是没补", actor="受理员",
                                    citizen_phone="045188888888", now=NOW)
        service.open_order(session, appeal_type="complaint", channel="web",
                           description="匿名反映", actor="受理员", now=NOW)
    with sessions() as session:
        assert screening.screen(session, "045188888888", NOW, NOW - NOW, 2).vip
        _total, found = service.find_orders(session, service.OrderQuery(
            citizen_phone="+86 451 8888 8888"))
        view = service.order_view(found[0], see_phone=True)
        garbled, _none = service.find_orders(session, service.OrderQuery(
            citizen_phone="anonymous"))
    assert garbled == 0  # not the orders with no number
    assert not first.repeat_caller and second.repeat_caller  # the same citizen again
    assert sorted(o.case_number for o in found) == [first.case_number, second.case_number]
    assert view["citizen_phone"] == "045188888888"
    assert service.order_view(found[0], see_phone=False)["citizen_phone"] == "045*****8888"


def test_the_migration_rewrites_numbers_stored_the_old_way(database_url: str) -> None:
    """Numbers the old normaliser stored (digits, +86 dropped) are rewritten in E.164, and
    call records learn their citizen's number; what cannot be read is left alone."""
    engine = make_engine(database_url)
    upgrade(engine, "0009")
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO caller_list (number, kind, note, created_at) VALUES "
            "('13800138000', 'block', '', :at), ('045188888888', 'vip', '', :at)"), {"at": NOW})
        conn.execute(text(
            "INSERT INTO callback_requests (id, caller_number, queue, position, priority, "
            "call_id, state, detail, requested_at, updated_at) VALUES "
            "('cb-1', '13900139000', 'intake', 1, 0, '', 'failed', '', :at, :at)"),
            {"at": NOW})
        conn.execute(text(
            "INSERT INTO call_records (call_id, caller_number, caller_name, entry_number, "
            "started_at, outcome, short_abandon, hold_seconds, hangup_cause_text, "
            "incomplete, details, stored_at) VALUES "
            "('c1', '+86 451 8888 8888', '', '12319', :at, 'ivr', false, 0, '', false, "
            "'{}', :at), ('c2', 'anonymous', '', '12319', :at, 'ivr', false, 0, '', false, "
            "'{}', :at)"), {"at": NOW})
    upgrade(engine)
    with engine.connect() as conn:
        listed = dict(conn.execute(text("SELECT kind, number FROM caller_list")).all())
        callback = conn.execute(text("SELECT caller_number FROM callback_requests")).scalar()
        citizens = dict(conn.execute(text(
            "SELECT call_id, citizen_number FROM call_records")).all())
    assert listed == {"block": "+8613800138000", "vip": "+8645188888888"}
    assert callback == "+8613900139000"
    assert citizens == {"c1": "+8645188888888", "c2": ""}
    from alembic import command

    command.downgrade(alembic_config(engine), "0009")  # and back, for a rollback
    upgrade(engine)
