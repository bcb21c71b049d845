"""One module per ``regops`` verb; see :mod:`regops.cli`."""
