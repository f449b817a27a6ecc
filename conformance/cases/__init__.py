"""Conformance cases written in Python, one module per area; every module here is imported.

Add a module to add cases (see docs/conformance.md, "Writing cases").
"""
