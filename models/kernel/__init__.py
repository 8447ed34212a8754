"""The shared core every domain stands on: domain errors, clock, field cipher, outbox, inbound-event dedupe."""
