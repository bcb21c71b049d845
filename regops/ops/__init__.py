"""Admin operations built on the models: usage reports, cleanup plans, garbage collection."""
