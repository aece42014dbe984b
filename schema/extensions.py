"""Schema extensions of our own."""

from __future__ import annotations

from collections.abc import AsyncIterator

from strawberry.extensions import SchemaExtension


class CloseRequestResources(SchemaExtension):
    """Close the request's read session once the operation has finished."""

    async def on_operation(self) -> AsyncIterator[None]:
        try:
            yield
        finally:  # also when the operation failed
            close = getattr(self.execution_context.context, "close", None)
            if close is not None:
                await close()
