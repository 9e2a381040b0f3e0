"""The operator command ``pixfleet`` (``python -m cli``): migrate, serve the edge, run a worker,
manage keys, models, datasets and dead letters, and run the whole stack with a demo job.

The top of the tree: it may import everything (``edge`` and ``worker`` only inside the
subcommands that run them) and nothing imports it.
"""
