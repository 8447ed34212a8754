"""The only writers of points and stored value: append-only books and the stored-value lots."""
