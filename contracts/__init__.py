"""Shared contracts between the pixfleet edge and workers.

Everything here is plain data: wire messages, the job record and its phases, the operation
union, settings groups, names of exchanges, queues, keys and object-store keys, and the SQL
migrations. This package imports msgspec and the standard library only, so a client or an
edge written in another language can rely on the same schemas (see ``contracts/schema/``).
"""

ENGINE_VERSION = "1"
"""Bumped when a change in the workers changes the bytes an operation produces."""
