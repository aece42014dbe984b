"""Outbound webhooks. Importing the package registers the outbox writer with
``server.signals`` (see ``webhooks.outbox``), so any process that imports a webhooks module
produces webhook events for the facts it commits."""

from webhooks import outbox as _outbox  # noqa: F401
