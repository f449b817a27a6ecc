"""Sample adapters and helpers for the reference bridge tests (tests/test_reference_*.py)."""
