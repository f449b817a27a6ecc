"""conformance (placeholder docstring, replaced by its owner)."""
