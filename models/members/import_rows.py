"""Reading a member import file: header rules, records in batches, per-row validation, repeated phones."""

from __future__ import annotations

import codecs
import csv
import io
import re
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Protocol

from models.kernel.errors import Unprocessable
from models.ledger.books import MAX_DELTA
from models.members.custom_fields import CustomFieldDef, validate_values
from models.members.members import PHONE_PATTERN

COLUMNS = ("phone", "name", "birthday", "gender", "store_code", "points", "balance", "reason")
DEFAULT_REASON = "opening balance (import)"
GENDERS = {"": "unknown", "unknown": "unknown", "male": "male", "female": "female", "男": "male", "女": "female"}
CUSTOM_CACHE_SIZE = 10_000
HEADER_PROBE = 65_536  # bytes checked for UTF-8 before a job is accepted
AMOUNT = re.compile(r"^[0-9]{1,10}$")
ISO_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
WHOLE = re.compile(r"^-?[0-9]{1,18}$")
TRUE_WORDS, FALSE_WORDS = frozenset({"true", "1", "yes", "y", "是"}), frozenset({"false", "0", "no", "n", "否"})


def read_header(head: bytes) -> list[str]:
    """The header row, lower-cased, from the file's first bytes; they must be UTF-8 (an Excel BOM is fine)."""
    probe = head[:HEADER_PROBE]
    try:
        codecs.getincrementaldecoder("utf-8-sig")().decode(probe, final=len(probe) < HEADER_PROBE)
    except UnicodeDecodeError:
        raise Unprocessable(
            "the file must be UTF-8 text (in Excel: Save As, CSV UTF-8)", code="import.not_utf8"
        ) from None
    text = io.StringIO(head.decode("utf-8-sig", errors="surrogateescape"), newline="")
    header = next(csv.reader(text), None)
    if not header or not any(cell.strip() for cell in header):
        raise Unprocessable("the file is empty: a header row is required", code="import.header_missing")
    return [cell.strip().lower() for cell in header]


def check_header(columns: list[str], custom_keys: set[str]) -> None:
    """Phone is required; every column is a known one or a custom field key, once."""
    if "phone" not in columns:
        raise Unprocessable("the header has no phone column", code="import.phone_column_missing")
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise Unprocessable(f"column {repeated[0]!r} appears twice", code="import.column_repeated")
    unknown = [c for c in columns if c not in COLUMNS and c not in custom_keys]
    if unknown:
        raise Unprocessable(
            f"unknown column {unknown[0]!r}: use {', '.join(COLUMNS)} or a custom field key",
            code="import.column_unknown",
        )


def count_records(lines: Iterable[str]) -> int:
    """Non-empty records after the header (one streaming pass)."""
    count = 0
    reader = csv.reader(lines)
    while True:
        try:
            for values in reader:
                count += bool(values)
            return max(count - 1, 0)
        except csv.Error:
            count += 1


@dataclass(slots=True)
class Row:
    line: int  # the physical line the record starts on; the header is line 1
    values: list[str]
    error: str = ""


@dataclass(slots=True)
class Candidate:
    line: int
    phone: str
    name: str
    gender: str
    birthday: date | None
    store_id: int | None
    points: int
    balance: int
    reason: str
    custom_fields: dict[str, Any]


class Lines(Protocol):
    consumed: int  # bytes of the lines handed out so far

    def __iter__(self) -> Iterator[str]: ...

    def __next__(self) -> str: ...


class CsvSource:
    """Records a batch at a time from a resume point (line and byte); blocking reads: call it from a worker thread."""

    def __init__(self, lines: Lines, *, line: int) -> None:
        self.lines, self.before = lines, line
        self.reader = csv.reader(lines)
        if line == 0:
            next(self.reader, None)  # the header

    @property
    def position(self) -> tuple[int, int]:
        """(last physical line read, byte offset after it): where a resumed job starts."""
        return self.before + self.reader.line_num, self.lines.consumed

    def take(self, limit: int, until: int | None = None) -> list[Row]:
        """Up to limit records, stopping before byte offset `until` when given."""
        rows: list[Row] = []
        while len(rows) < limit and (until is None or self.lines.consumed < until):
            start = self.before + self.reader.line_num + 1
            try:
                values = next(self.reader)
            except StopIteration:
                break
            except csv.Error as exc:
                rows.append(Row(start, [], f"malformed CSV: {exc}"))
                continue
            if values:
                rows.append(Row(start, values))
        return rows


class SeenPhones:
    """Phones already accepted from this file, kept on disk (SQLite) so a million rows need no million-entry set."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, check_same_thread=False)  # used by one worker thread at a time
        self.db.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; CREATE TABLE seen (phone TEXT PRIMARY KEY, line INT)"
        )

    def claim(self, items: list[tuple[str, int]]) -> dict[int, int]:
        """Record first sightings of (phone, line); returns {line: first line} for phones accepted before."""
        if not items:
            return {}
        marks = ",".join("?" * len(items))
        query = f"SELECT phone, line FROM seen WHERE phone IN ({marks})"  # noqa: S608 - placeholders only
        first = dict(self.db.execute(query, [phone for phone, _ in items]))
        repeats: dict[int, int] = {}
        fresh: list[tuple[str, int]] = []
        for phone, line in items:
            if phone in first:
                repeats[line] = first[phone]
            else:
                first[phone] = line
                fresh.append((phone, line))
        self.db.executemany("INSERT INTO seen VALUES (?, ?)", fresh)
        return repeats

    def close(self) -> None:
        self.db.close()


@dataclass(frozen=True)
class RowRules:
    merchant_id: int
    columns: list[str]
    stores: dict[str, int]  # store code -> id
    definitions: dict[str, CustomFieldDef]
    today: date
    # custom values repeat (tiers, flags): each distinct set is validated once per job
    custom_checked: dict[tuple[tuple[str, Any], ...], dict[str, Any] | str] = field(default_factory=dict)

    async def custom_values(self, values: dict[str, Any]) -> dict[str, Any] | str:
        """The validated custom fields of a row, or why they are invalid."""
        key = tuple(values.items())
        checked = self.custom_checked.get(key)
        if checked is None:
            try:
                checked = await validate_values(merchant_id=self.merchant_id, values=values, enforce_required=False)
            except Unprocessable as exc:
                checked = exc.message
            if len(self.custom_checked) >= CUSTOM_CACHE_SIZE:
                self.custom_checked.clear()
            self.custom_checked[key] = checked
        return dict(checked) if isinstance(checked, dict) else checked


def _amount(text: str, column: str, unit: str) -> int:
    if not text:
        return 0
    if not AMOUNT.match(text) or int(text) > MAX_DELTA:
        raise ValueError(f"{column} must be a whole number{unit} from 0 to {MAX_DELTA}")
    return int(text)


def _day(text: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text) if ISO_DATE.match(text) else None
    except ValueError:
        return None


def _typed(definition: CustomFieldDef, text: str) -> Any:
    """CSV text as the JSON type of the custom field; validate_values still decides what is valid."""
    if definition.type == "int" and WHOLE.match(text):
        return int(text)
    if definition.type == "bool" and text.lower() in TRUE_WORDS | FALSE_WORDS:
        return text.lower() in TRUE_WORDS
    return text


def _check_cells(rules: RowRules, cells: dict[str, str]) -> str:
    """The first problem of a row's own fields, or ""."""
    phone = cells.get("phone", "")
    if not phone:
        return "phone is required"
    if not PHONE_PATTERN.match(phone):
        return "phone must be 6-20 digits"
    if len(cells.get("name", "")) > 64:
        return "name is longer than 64 characters"
    if len(cells.get("reason", "")) > 255:
        return "reason is longer than 255 characters"
    if cells.get("gender", "").lower() not in GENDERS:
        return "gender must be male, female, unknown, 男 or 女"
    birthday = _day(cells.get("birthday", ""))
    if cells.get("birthday") and birthday is None:
        return "birthday must be a date YYYY-MM-DD"
    if birthday is not None and birthday > rules.today:
        return "birthday is in the future"
    store_code = cells.get("store_code", "")
    if store_code and store_code not in rules.stores:
        return f"unknown store_code {store_code[:40]!r}"
    return ""


async def parse_row(rules: RowRules, row: Row) -> Candidate | str:
    """A row as a member to import, or the reason it is rejected."""
    width = len(rules.columns)
    if len(row.values) > width and any(v.strip() for v in row.values[width:]):
        return f"too many columns ({len(row.values)}; the header has {width})"
    cells = {column: value.strip() for column, value in zip(rules.columns, row.values, strict=False)}
    try:
        "".join(cells.values()).encode("utf-8")
    except UnicodeEncodeError:
        return "not valid UTF-8"
    if problem := _check_cells(rules, cells):
        return problem
    try:
        points = _amount(cells.get("points", ""), "points", "")
        balance = _amount(cells.get("balance", ""), "balance", " of fen")
    except ValueError as exc:
        return str(exc)
    custom = {key: _typed(rules.definitions[key], cells[key]) for key in rules.definitions if cells.get(key)}
    if custom:
        checked = await rules.custom_values(custom)
        if isinstance(checked, str):
            return checked
        custom = checked
    store_code = cells.get("store_code", "")
    return Candidate(
        line=row.line,
        phone=cells["phone"],
        name=cells.get("name", ""),
        gender=GENDERS[cells.get("gender", "").lower()],
        birthday=_day(cells.get("birthday", "")),
        store_id=rules.stores[store_code] if store_code else None,
        points=points,
        balance=balance,
        reason=cells.get("reason", "") or DEFAULT_REASON,
        custom_fields=custom,
    )
