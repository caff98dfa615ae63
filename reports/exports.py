"""The reports page's tables (报表) and their exports: XLSX (openpyxl) and CSV in UTF-8 with
a byte-order mark, so Excel opens the Chinese words correctly. The page and both files are
written from the same `Section`s, so they show the same figures.

A cell is None (no figure: shown "—", an empty cell in the XLSX), or a value of its
column's kind: "text", "count" (a whole number), "rate" (a fraction, shown as a percent
with 2 decimals, kept as the fraction with a percent format in the XLSX), "seconds" (1
decimal) or "score" (2 decimals).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from openpyxl import Workbook
from openpyxl.styles import Font

KINDS = ("text", "count", "rate", "seconds", "score")
XLSX_FORMATS = {"count": "0", "rate": "0.00%", "seconds": "0.0", "score": "0.00"}
NO_FIGURE = "—"
SHEET_TITLE_MAX = 31  # Excel's limit
_SHEET_REFUSED = re.compile(r"[\[\]:*?/\\]")


@dataclass(frozen=True)
class Column:
    label: str
    kind: str = "text"


@dataclass(frozen=True)
class Section:
    """One table: its key (the page's element id), its title, columns and rows."""

    key: str
    title: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[Any, ...], ...]


def shown(value: Any, kind: str) -> str:
    """A cell as the page and the CSV show it."""
    if value is None:
        return NO_FIGURE
    if kind == "rate":
        return f"{value * 100:.2f}%"
    if kind == "seconds":
        return f"{value:.1f}"
    if kind == "score":
        return f"{value:.2f}"
    if kind == "count":
        return str(int(value))
    return str(value)


def _safe_text(text: str) -> str:
    """Text a spreadsheet will not run as a formula (CSV/formula injection)."""
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def to_csv(heading: Sequence[str], sections: Sequence[Section]) -> bytes:
    """The heading lines, then each section: its title, its header row, its rows, a blank
    line. UTF-8 with BOM, CRLF line ends."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    for line in heading:
        writer.writerow([_safe_text(line)])
    writer.writerow([])
    for section in sections:
        writer.writerow([_safe_text(section.title)])
        writer.writerow([_safe_text(c.label) for c in section.columns])
        for row in section.rows:
            writer.writerow([_safe_text(shown(value, column.kind)) if column.kind == "text"
                             else shown(value, column.kind)
                             for value, column in zip(row, section.columns, strict=True)])
        writer.writerow([])
    return out.getvalue().encode("utf-8-sig")


def _sheet_title(title: str, taken: set[str]) -> str:
    base = _SHEET_REFUSED.sub(" ", title).strip()[:SHEET_TITLE_MAX] or "sheet"
    name, n = base, 2
    while name.lower() in taken:
        suffix = f" ({n})"
        name, n = base[:SHEET_TITLE_MAX - len(suffix)] + suffix, n + 1
    taken.add(name.lower())
    return name


def to_xlsx(heading: Sequence[str], sections: Sequence[Section]) -> bytes:
    """One sheet per section: the heading lines, a blank row, the header row (bold), the
    rows; numbers stay numbers, with their kind's format."""
    book = Workbook()
    book.remove(book.active)
    taken: set[str] = set()
    for section in sections:
        sheet = book.create_sheet(_sheet_title(section.title, taken))
        for line in heading:
            sheet.append([_safe_text(line)])
        sheet.append([])
        sheet.append([_safe_text(c.label) for c in section.columns])
        for cell in sheet[sheet.max_row]:
            cell.font = Font(bold=True)
        for row in section.rows:
            sheet.append([None if value is None else
                          _safe_text(str(value)) if column.kind == "text" else value
                          for value, column in zip(row, section.columns, strict=True)])
            for cell, column in zip(sheet[sheet.max_row], section.columns, strict=True):
                if column.kind in XLSX_FORMATS:
                    cell.number_format = XLSX_FORMATS[column.kind]
        sheet.column_dimensions["A"].width = 24
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
