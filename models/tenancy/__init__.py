"""Merchants (tenants), their stores, staff and WeChat accounts, and each merchant's program settings."""
