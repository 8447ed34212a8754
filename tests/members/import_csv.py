"""A member import file with known bad rows: the expected rejects are computed alongside the CSV.

Also used by bench/import.py, which streams a million rows to disk through `generate`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

HEADER = "phone,name,birthday,gender,store_code,points,balance,reason,level"
GENDERS = ("male", "female", "男", "女", "", "unknown")
BAD_KINDS = 8
LEVEL_OPTIONS = ("gold", "silver")


@dataclass
class ImportFile:
    body: bytes
    rejects: list[tuple[int, str]] = field(default_factory=list)
    good_rows: int = 0
    points_rows: int = 0
    points_total: int = 0
    balance_rows: int = 0
    balance_total: int = 0


def phone_of(i: int) -> str:
    return f"139{i:08d}"


def build(rows: int, *, store_code: str, bad_every: int = 100) -> ImportFile:
    """The whole file in memory (tests): see generate."""
    lines: list[str] = []
    out = generate(rows, store_code=store_code, write=lines.append, bad_every=bad_every)
    out.body = "".join(lines).encode("utf-8")
    return out


def generate(rows: int, *, store_code: str, write: Callable[[str], object], bad_every: int = 100) -> ImportFile:
    """Write a header and rows data rows; row i with i % bad_every == bad_every // 2 is bad (BAD_KINDS reasons)."""
    out = ImportFile(b"")
    write("\ufeff" + HEADER + "\r\n")
    bad_seen = 0
    for i in range(rows):
        line = i + 2
        phone, name, birthday = phone_of(i), f"Member {i}", f"19{50 + i % 50}-{1 + i % 12:02d}-{1 + i % 28:02d}"
        gender, store, level = GENDERS[i % len(GENDERS)], store_code if i % 3 == 0 else "", ""
        points = str(100 + i % 7) if i % 10 == 0 else ""
        balance = str(500 + i % 11) if i % 20 == 0 else ""
        reason = "migrated from the old POS" if i % 40 == 0 else ""
        if i % 4 == 0:
            level = LEVEL_OPTIONS[0] if i % 8 == 0 else LEVEL_OPTIONS[1]
        if i % bad_every == bad_every // 2:
            kind = bad_seen % BAD_KINDS
            bad_seen += 1
            if kind == 0:
                phone, why = f"12ab{i}", "phone must be 6-20 digits"
            elif kind == 1:
                birthday, why = "1990-13-01", "birthday must be a date YYYY-MM-DD"
            elif kind == 2:
                store, why = "NOPE", "unknown store_code 'NOPE'"
            elif kind == 3:
                points, why = "-5", "points must be a whole number from 0 to 1000000000"
            elif kind == 4:
                balance, why = "12.5", "balance must be a whole number of fen from 0 to 1000000000"
            elif kind == 5:
                level, why = "platinum", "level must be one of gold, silver"
            elif kind == 6:
                first = i - 251 if i >= 251 else i - 1  # sometimes in an earlier batch of 500
                phone, why = phone_of(first), f"duplicate phone (first on line {first + 2})"
            else:
                gender, why = "x", "gender must be male, female, unknown, 男 or 女"
            out.rejects.append((line, why))
        else:
            out.good_rows += 1
            if points:
                out.points_rows += 1
                out.points_total += int(points)
            if balance:
                out.balance_rows += 1
                out.balance_total += int(balance)
        write(f"{phone},{name},{birthday},{gender},{store},{points},{balance},{reason},{level}\r\n")
    return out
