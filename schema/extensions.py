"""The schema's own per-request policy, as ONE strawberry extension.

strawberry builds every extension afresh for each request and walks each one's hooks at each
phase (operation, parse, validate, execute); five small extensions cost about as much CPU as a
whole cached ``{ __typename }`` query. So what we add around an operation lives here, in one:

- the token limit for the parser (what ``MaxTokensLimiter`` does);
- the depth, alias and cost validation rules, built once per schema so that the validation
  cache keeps hitting (what ``AddValidationRules`` does);
- the cost re-count with the request's variables (``schema.cost.variable_cost_error``);
- error masking with ``schema.errors.should_mask_error`` (what ``MaskErrors`` does; no
  incremental delivery is enabled, so there are no streamed results to mask);
- closing the request's read session once the operation has finished;
- marking an anonymous query made only of public root fields as reusable for a moment
  (``server.public_cache``; the HTTP endpoint keeps the response);
- what strawberry's ``ParserCache`` and ``ValidationCache`` do: parsed documents and
  validation results kept in LRU caches shared by every request (the validation rules are
  built once per schema, so the cache keeps hitting): one extension instead of three saves
  about 13 us of strawberry's hook machinery per request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from functools import lru_cache
from typing import Any

from graphql import ASTValidationRule, FieldNode, GraphQLError, GraphQLSchema, get_operation_ast
from graphql import ExecutionResult as GraphQLExecutionResult
from graphql.language.parser import parse
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import validate_document
from strawberry.types import ExecutionContext, ExecutionResult
from strawberry.types.graphql import OperationType

from schema.cost import variable_cost_error
from server import public_cache
from server.auth import ANONYMOUS

MASKED_MESSAGE = "Unexpected error."

# Shared by every request (as strawberry's ParserCache and ValidationCache would keep them).
CACHED_DOCUMENTS = 1024
_parse = lru_cache(maxsize=CACHED_DOCUMENTS)(parse)


@lru_cache(maxsize=CACHED_DOCUMENTS)
def _validate(
    schema: GraphQLSchema,
    query: str,
    parse_options: tuple[tuple[str, Any], ...],
    rules: tuple[type[ASTValidationRule], ...],
) -> list[GraphQLError]:
    """Validation errors of a query, keyed by its text: strawberry's ValidationCache keys by
    the parsed document, whose hash walks the whole syntax tree on every request."""
    return validate_document(schema, _parse(query, **dict(parse_options)), rules)


class RequestPolicy(SchemaExtension):
    def __init__(
        self,
        *,
        max_tokens: int,
        max_cost: int,
        validation_rules: Sequence[type[ASTValidationRule]],
        should_mask_error: Callable[[GraphQLError], bool],
    ) -> None:
        self.max_tokens = max_tokens
        self.max_cost = max_cost
        self.validation_rules = tuple(validation_rules)
        self.should_mask_error = should_mask_error

    async def on_operation(self) -> AsyncIterator[None]:
        context = self.execution_context
        context.parse_options["max_tokens"] = self.max_tokens
        context.validation_rules = context.validation_rules + self.validation_rules
        try:
            yield
        finally:  # also when the operation failed
            close = getattr(context.context, "close", None)
            if close is not None:
                await close()
        result = context.result
        if isinstance(result, GraphQLExecutionResult | ExecutionResult):
            if result.errors:
                result.errors = [self._masked(error) for error in result.errors]
            else:
                _mark_public(context)

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        context.graphql_document = _parse(context.query, **context.parse_options)
        yield

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        assert context.query is not None  # parsed already
        context.pre_execution_errors = _validate(
            context.schema._schema,
            context.query,
            tuple(context.parse_options.items()),
            tuple(context.validation_rules),
        )
        yield

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        if not context.result:
            error = variable_cost_error(context, self.max_cost)
            if error is not None:  # over the limit: execution is skipped
                context.result = GraphQLExecutionResult(data=None, errors=[error])
        yield

    def _masked(self, error: GraphQLError) -> GraphQLError:
        if not self.should_mask_error(error):
            return error
        return GraphQLError(
            message=MASKED_MESSAGE,
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            original_error=None,
        )


def _mark_public(execution: ExecutionContext) -> None:
    """An anonymous HTTP query whose root fields are all public: tell the endpoint how long
    its response may be reused (``request.state.public_max_age``)."""
    request = getattr(execution.context, "request", None)
    if (
        getattr(execution.context, "principal", None) is not ANONYMOUS
        or request is None
        or request.scope.get("type") != "http"
        or execution.graphql_document is None
        or execution.operation_type is not OperationType.QUERY
    ):
        return
    operation = get_operation_ast(execution.graphql_document, execution.operation_name)
    if operation is None:
        return
    names = []
    for node in operation.selection_set.selections:
        if not isinstance(node, FieldNode):  # fragments at the root: not worth resolving
            return
        names.append(node.name.value)
    age = public_cache.max_age(names)
    if age > 0:
        request.state.public_max_age = age
