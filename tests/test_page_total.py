"""core.db.page_total: a search's total without a COUNT when its page shows where the
matches end, and with one when it cannot (a full page, or a page past the end)."""

from __future__ import annotations

import pytest

from core.db import page_total

COUNTED = 57  # what the COUNT would say


@pytest.mark.parametrize(("page", "limit", "offset", "total", "counted"), [
    (3, 10, 0, 3, False),  # the first page, not full: these are all
    (0, 10, 0, 0, False),  # nothing matches
    (4, 10, 20, 24, False),  # the last page
    (10, 10, 0, COUNTED, True),  # a full page: more may follow
    (10, 10, 40, COUNTED, True),
    (0, 10, 60, COUNTED, True),  # past the end: where it ends is not known
    (0, 0, 0, COUNTED, True),  # no page asked for, only the total
])
def test_a_page_that_is_not_full_needs_no_count(page: int, limit: int, offset: int,
                                                total: int, counted: bool) -> None:
    asked: list[bool] = []

    def count() -> int:
        asked.append(True)
        return COUNTED

    assert page_total(page, limit, offset, count) == total
    assert bool(asked) is counted
