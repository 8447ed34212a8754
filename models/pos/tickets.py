"""A visiting member's till ticket: a chain member of another store, served at this till for a while.

A cashier (or a store's POS key) sees only the members of its own store. A member of the same merchant who
shows their dynamic QR code or their member card at another store is physically at that till, so the lookup
answers for them and hands the till a ticket: HMAC-signed (a key derived for this purpose from the server
secret), bound to the merchant, the store and the member, valid for TICKET_TTL seconds. Quote and settle take
it in `member_ticket`; with it, that one member is served at that one store. Stateless, so any worker on any
host verifies it; nothing about it is stored. A phone number is not proof of presence: no ticket for it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct

from models.kernel import clock
from models.kernel.errors import Forbidden

TICKET_TTL = 30 * 60  # a long checkout at a busy till, and its quote, settle and an immediate correction
TICKET_PREFIX = "HYT"
_BODY = struct.Struct(">IIQI")  # merchant id, store id, member id, expiry (epoch s)
_MAC_LEN = 16


def _mac(secret: str, body: bytes) -> bytes:
    key = hmac.new(secret.encode(), b"huiyuan/till-ticket", hashlib.sha256).digest()
    return hmac.new(key, body, hashlib.sha256).digest()[:_MAC_LEN]


def issue_ticket(*, secret: str, merchant_id: int, store_id: int, member_id: int) -> str:
    """A ticket for serving this member at this store until TICKET_TTL seconds from now."""
    body = _BODY.pack(merchant_id, store_id, member_id, int(clock.now().timestamp()) + TICKET_TTL)
    return TICKET_PREFIX + base64.urlsafe_b64encode(body + _mac(secret, body)).decode("ascii").rstrip("=")


def check_ticket(ticket: str, *, secret: str, merchant_id: int, store_id: int, member_id: int) -> None:
    """403 pos.ticket_invalid unless the ticket is genuine, unexpired and for this merchant, store and member."""
    invalid = Forbidden(
        "the member ticket is invalid, expired or for another member or store: identify the member again",
        code="pos.ticket_invalid",
        field="member_ticket",
    )
    if not ticket.startswith(TICKET_PREFIX):
        raise invalid
    encoded = ticket[len(TICKET_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        raise invalid from None
    if len(raw) != _BODY.size + _MAC_LEN:
        raise invalid
    body, mac = raw[: _BODY.size], raw[_BODY.size :]
    if not hmac.compare_digest(_mac(secret, body), mac):
        raise invalid
    if _BODY.unpack(body)[:3] != (merchant_id, store_id, member_id) or _BODY.unpack(body)[3] <= clock.now().timestamp():
        raise invalid
