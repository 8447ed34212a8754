"""The CSV of a bulk tagging: one column, `phone` or `member_id`, one member a line (blocking: run in a thread)."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field

from models.kernel.errors import Unprocessable
from models.segments.tags import MAX_BULK

COLUMNS = ("phone", "member_id")


@dataclass
class BulkLines:
    member_ids: list[tuple[int, int]] = field(default_factory=list)  # (file line, member id)
    phones: list[tuple[int, str]] = field(default_factory=list)  # (file line, phone)
    bad: list[tuple[int, str]] = field(default_factory=list)  # (file line, the cell): not a member id


def parse_bulk_csv(body: bytes) -> BulkLines:
    """Lines numbered as in the file (the header is line 1); blank lines skipped; more than MAX_BULK refused."""
    text = body.removeprefix(b"\xef\xbb\xbf").decode("utf-8", "replace")
    reader = csv.reader(text.splitlines())
    found = BulkLines()
    column: str | None = None
    for cells in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        if column is None:
            header = [cell.strip().lower() for cell in cells]
            if len(header) != 1 or header[0] not in COLUMNS:
                raise Unprocessable("the CSV has one column: phone or member_id", code="tag.csv_header", field="body")
            column = header[0]
            continue
        if len(found.member_ids) + len(found.phones) + len(found.bad) >= MAX_BULK:
            raise Unprocessable(f"at most {MAX_BULK} lines at once", code="tag.bulk_too_large", field="body")
        cell = cells[0].strip()
        if column == "phone":
            found.phones.append((line, cell))
        elif cell.isdigit() and len(cell) <= 10:
            found.member_ids.append((line, int(cell)))
        else:
            found.bad.append((line, cell))
    if column is None:
        raise Unprocessable("the CSV is empty: a header row phone or member_id", code="tag.csv_header", field="body")
    return found
