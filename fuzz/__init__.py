"""Property-based fuzzing of Snakepit bridges (hypothesis), over the same transports as conformance.

``strategies`` generates values each codec can carry, valid requests and broken
frames; ``oracle`` says what a correct bridge answers; ``properties`` and
``machines`` state what must hold; ``runner`` runs them within a budget;
``regression`` writes a shrunk failure as a golden-frame file; ``cli`` is the
``snakepit-harness fuzz`` subcommand and ``profiles`` the hypothesis profiles
(``dev``, ``ci``) for the pytest runs.  Only ``cli`` and ``defaults`` are
imported at CLI start-up; everything else needs hypothesis.
"""
