"""Points: expiring lots, earning and activity rules, expiry and reminders, daily sign-in."""
