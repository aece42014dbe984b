"""The GraphQL execution context, without the reference cycle graphql-core builds into it.

graphql-core's executor keeps ``async_helpers``, a pair of its own bound methods: the executor
refers to itself. Every request's execution (the executor, the resolve infos, the collected
fields, the context with its request and response) was therefore freed by the cyclic garbage
collector instead of by reference counting when the request ended; the collector took about
a tenth of an API process's CPU under load (perf, ``bench/members.py``). Here the helpers
reach the executor through weak references: no cycle, and the same calls while the
operation runs (the running resolvers keep the executor alive).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from graphql.type.definition import GraphQLResolveInfoHelpers
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext


def _weak(method: Callable[..., Any]) -> Callable[..., Any]:
    reference = weakref.WeakMethod(method)

    def call(*args: Any, **kwargs: Any) -> Any:
        bound = reference()
        if bound is None:  # pragma: no cover - the executor outlives its operation's work
            raise RuntimeError("the GraphQL operation has ended")
        return bound(*args, **kwargs)

    return call


class ExecutionContext(StrawberryGraphQLCoreExecutionContext):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        helpers = getattr(self, "async_helpers", None)
        if isinstance(helpers, GraphQLResolveInfoHelpers):  # graphql-core 3.3
            self.async_helpers = GraphQLResolveInfoHelpers(
                gather=_weak(helpers.gather), track=_weak(helpers.track)
            )
