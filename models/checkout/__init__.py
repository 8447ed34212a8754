"""What a member buys: consumption records and the points and growth value they earn."""
