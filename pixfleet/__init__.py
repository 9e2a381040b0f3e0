"""Shared runtime library of pixfleet: object store, database, broker topology, operator CLI.

Never imports edge, worker, litestar or the numeric stack at import time.
"""
