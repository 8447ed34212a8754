"""Members: identity and profile, custom fields, timeline, imports and export, the member QR code."""
