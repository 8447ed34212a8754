"""The till: identifying the member at the POS (and, with checkout, what the till does for them)."""
