"""Background work: outbox delivery now; scheduler, campaigns and queue workers later."""
