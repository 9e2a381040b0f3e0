"""The shared library of pixfleet: object store, database (pool, migrations), broker
topology, outages, ids, logging, image sniffing, and the registries (API keys, models,
datasets) that the edge, the worker and the operator commands all use.

Nothing above it: never imports edge, worker or cli (``tests/unit/test_layers.py``), nor
litestar or the numeric stack.
"""
