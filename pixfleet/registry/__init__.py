"""The registries: API keys, registered models and datasets. Each module holds its table's SQL
in one place, its records and its errors; the edge, the worker and the operator commands call
it and map its errors at their own boundaries (a problem document, a job error, a message).

Imports the standard library, msgspec, asyncpg, ``contracts`` and the rest of ``pixfleet``
only: never edge, worker or cli, never the numeric stack.
"""
