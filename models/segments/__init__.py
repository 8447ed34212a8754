"""Member tags: manual tags staff set, and rule tags kept current from a typed JSON rule compiled to SQL."""
