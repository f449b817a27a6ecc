"""loadtests (placeholder docstring, replaced by its owner)."""
