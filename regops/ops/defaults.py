"""Defaults and choices of the operations that command lines show in ``--help``.

Here, with nothing imported, so that ``regops --help`` and ``regops usage --help``
build their parsers without loading the operations (requests, the registry
client, tokens, cryptography); the operations import them from here.
"""

from __future__ import annotations

# regops.ops.usage: the cap on concurrent registry requests (--workers). The scan starts
# at regops.http.LIMIT_INITIAL and grows while throughput grows and latency holds
# (regops.http.AdaptiveLimit): 64 keeps a registry 20-50 ms away busy, and a local one
# is never sent more than its latency shows it takes.
USAGE_WORKERS = 64
USAGE_MAX_WORKERS = 128  # threads and connections per host; the pools are sized to the cap
USAGE_FORMATS = ("csv", "json", "table")

# regops.ops.forecast: projects planned at once; each reads its tags 8 at a time (resolver).
FORECAST_WORKERS = 4
FORECAST_MAX_WORKERS = 32  # regops.http.POOL_SIZE: more only queues
