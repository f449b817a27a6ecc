"""Reference bridges and the adapter API."""
