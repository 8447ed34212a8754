"""What a staff principal may see, as one value that becomes the query filter of every list and get.

A `Scope` is a merchant and, for store-scoped roles (store_manager, cashier), the one store they are limited
to. It is built in exactly one place (`server.auth.scope_of`) and domain list/get functions take it instead of
loose merchant_id/store_id pairs, so each kind of row has one filter:

- stores:             `scope.stores()`       (the store itself)
- rows of a store:    `scope.store_rows()`   (staff, QR codes, anything with a store_id)
- members:            `scope.members()`      (a member belongs to its origin store)
- rows of a member:   `models.members.members.member_rows(scope)` (member_id in the store's member ids;
                      it lives in members because tenancy is below members and cannot name the table)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Scope:
    """A merchant, and the store a store-scoped role is limited to (None: the whole merchant)."""

    merchant_id: int
    store_id: int | None = None

    @property
    def limited(self) -> bool:
        """True for a store-scoped role: every row it sees belongs to `store_id`."""
        return self.store_id is not None

    def sees_store(self, store_id: int | None) -> bool:
        """Whether a row of this store (None: of no store, merchant-wide) is visible."""
        return self.store_id is None or store_id == self.store_id

    def stores(self) -> dict[str, Any]:
        """Filter for the stores table."""
        return {"merchant_id": self.merchant_id, **({"id": self.store_id} if self.limited else {})}

    def store_rows(self) -> dict[str, Any]:
        """Filter for rows owned by a store (a `store_id` column): staff, QR codes."""
        return {"merchant_id": self.merchant_id, **({"store_id": self.store_id} if self.limited else {})}

    def members(self) -> dict[str, Any]:
        """Filter for the members table: a member belongs to its origin store."""
        return {"merchant_id": self.merchant_id, **({"origin_store_id": self.store_id} if self.limited else {})}
