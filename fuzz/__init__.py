"""fuzz (placeholder docstring, replaced by its owner)."""
