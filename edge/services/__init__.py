"""Decisions of the edge: authentication, submission, outbox, events. No HTTP, no SQL text."""
