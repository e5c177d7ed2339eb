"""x. May import: y."""
