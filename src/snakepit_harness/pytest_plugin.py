"""pytest plugin entry point (pytest11); the conformance suite adds its options here."""
