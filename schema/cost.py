"""Query cost limits: what a query may ask for, counted before anything runs.

Every field costs 1. A field that takes ``first`` (connections, leaderboards) multiplies the
cost of its sub-selection by the page it asks for: the literal value, else the variable's
value, else the argument's default, else ``DEFAULT_PAGE_SIZE``, and at most ``MAX_PAGE_SIZE``
(a bigger page is refused by the field itself, with ``INVALID_INPUT``). Aliases are separate fields,
so ``a: members(first: 100) {...} b: members(first: 100) {...}`` costs twice one of them;
fragments are counted where they are spread. Lists without ``first`` count once (their size
is bounded by the data, not by the query). A query above ``QUESTLINE_MAX_QUERY_COST`` is
refused with a GraphQL error whose ``extensions.code`` is ``QUERY_TOO_COSTLY``, before any
resolver runs.

Two checks share one calculator:

- a validation rule, built once per schema (so the validation cache keeps hitting),
  counts with literals and defaults (a variable counts as its default value, else as the
  argument's default, else ``DEFAULT_PAGE_SIZE``);
- ``variable_cost_error`` re-counts before execution with the request's variables, only for
  operations whose page sizes come from variables (known per query text, cached); the
  request policy extension (``schema.extensions``) calls it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationRule,
    ValueNode,
    VariableNode,
    get_named_type,
    get_operation_ast,
)
from graphql.type import SchemaMetaFieldDef, TypeMetaFieldDef, TypeNameMetaFieldDef
from strawberry.types import ExecutionContext

from schema.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

ERROR_CODE = "QUERY_TOO_COSTLY"
PAGE_ARGUMENT = "first"
PLAN_CACHE_SIZE = 1024


class CostCalculator:
    """The cost of the operations of one document (``variables``: the request's, or None
    while validating)."""

    def __init__(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        variables: Mapping[str, Any] | None = None,
        default_page_size: int = DEFAULT_PAGE_SIZE,
        max_page_size: int = MAX_PAGE_SIZE,
    ) -> None:
        self.schema = schema
        self.variables = variables
        self.default_page_size = default_page_size
        self.max_page_size = max_page_size
        self.fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        self.uses_variables = False  # a page size came from a variable
        self._defaults: dict[str, ValueNode | None] = {}
        self._fragment_costs: dict[str, int] = {}
        self._visiting: set[str] = set()

    def operation_cost(self, operation: OperationDefinitionNode) -> int:
        self._defaults = {
            v.variable.name.value: v.default_value for v in operation.variable_definitions or ()
        }
        self._fragment_costs = {}  # variable defaults differ per operation
        root = self.schema.get_root_type(operation.operation)
        return self._selection_cost(root, operation.selection_set)

    def _selection_cost(self, parent: GraphQLNamedType | None, selections: SelectionSetNode) -> int:
        total = 0
        for selection in selections.selections:
            if isinstance(selection, FieldNode):
                total += self._field_cost(parent, selection)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                scope = self.schema.get_type(condition.name.value) if condition else parent
                total += self._selection_cost(scope, selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                total += self._fragment_cost(selection.name.value)
        return total

    def _fragment_cost(self, name: str) -> int:
        """Memoised: a fragment spread many times is counted each time, but walked once (no
        exponential walk through fragments spreading fragments). Cycles count 0 (another
        rule rejects them)."""
        if name in self._fragment_costs:
            return self._fragment_costs[name]
        fragment = self.fragments.get(name)
        if fragment is None or name in self._visiting:
            return 0
        self._visiting.add(name)
        try:
            scope = self.schema.get_type(fragment.type_condition.name.value)
            cost = self._selection_cost(scope, fragment.selection_set)
        finally:
            self._visiting.discard(name)
        self._fragment_costs[name] = cost
        return cost

    def _field_cost(self, parent: GraphQLNamedType | None, node: FieldNode) -> int:
        if node.selection_set is None:
            return 1
        definition = _field_definition(parent, node.name.value)
        if definition is None:  # an unknown field: another rule reports it
            return 1 + self._selection_cost(None, node.selection_set)
        child = get_named_type(definition.type)
        return 1 + self._page_size(definition, node) * self._selection_cost(
            child, node.selection_set
        )

    def _page_size(self, definition: GraphQLField, node: FieldNode) -> int:
        argument = definition.args.get(PAGE_ARGUMENT)
        if argument is None:
            return 1
        given = next((a.value for a in node.arguments or () if a.name.value == PAGE_ARGUMENT), None)
        size = self._int(given) if given is not None else None
        if size is None and isinstance(argument.default_value, int):
            size = argument.default_value
        if size is None:
            size = self.default_page_size
        # above the maximum, the resolver refuses the page itself (INVALID_INPUT, a clearer
        # message than a cost): count the most it could return
        return min(max(0, size), self.max_page_size)

    def _int(self, value: ValueNode | None) -> int | None:
        if isinstance(value, IntValueNode):
            return int(value.value)
        if isinstance(value, VariableNode):
            self.uses_variables = True
            name = value.name.value
            if self.variables is not None and name in self.variables:
                given = self.variables[name]
                return given if isinstance(given, int) and not isinstance(given, bool) else None
            default = self._defaults.get(name)
            return self._int(default) if isinstance(default, IntValueNode) else None
        return None


def _field_definition(parent: GraphQLNamedType | None, name: str) -> GraphQLField | None:
    if name == "__schema":
        return SchemaMetaFieldDef
    if name == "__type":
        return TypeMetaFieldDef
    if name == "__typename":
        return TypeNameMetaFieldDef
    if isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
        return parent.fields.get(name)
    return None


def too_costly(cost: int, limit: int, operation: OperationDefinitionNode | None) -> GraphQLError:
    name = f" {operation.name.value!r}" if operation and operation.name else ""
    return GraphQLError(
        f"Query{name} is too costly: cost {cost} exceeds the limit of {limit}. Every field "
        f"costs 1 and a paginated field multiplies its selection by `first` (default "
        f"{DEFAULT_PAGE_SIZE}); ask for smaller pages or fewer fields and aliases.",
        nodes=[operation] if operation else None,
        extensions={"code": ERROR_CODE, "cost": cost, "maxCost": limit},
    )


def cost_limit_rule(max_cost: int) -> type[ValidationRule]:
    """A validation rule class for ``max_cost``; build it once per schema."""

    class QueryCostRule(ValidationRule):
        def enter_document(self, node: DocumentNode, *_args: Any) -> Any:
            calculator = CostCalculator(self.context.schema, node)
            for definition in node.definitions:
                if isinstance(definition, OperationDefinitionNode):
                    cost = calculator.operation_cost(definition)
                    if cost > max_cost:
                        self.report_error(too_costly(cost, max_cost, definition))
            return self.SKIP  # everything is counted; nothing else to visit for this rule

    return QueryCostRule


# query text and operation name -> does the cost depend on variables? (shared, bounded)
_plans: OrderedDict[tuple[str, str | None], bool] = OrderedDict()


def variable_cost_error(context: ExecutionContext, max_cost: int) -> GraphQLError | None:
    """Re-counts, with the request's variables, an operation whose page sizes are variables
    (run before execution): the error when it is over ``max_cost``, else None."""
    document = context.graphql_document
    if not (context.variables and context.query and document is not None):
        return None
    operation = get_operation_ast(document, context.operation_name)
    if operation is None or not _depends_on_variables(context, document, operation):
        return None
    calculator = CostCalculator(context.schema._schema, document, variables=context.variables)
    cost = calculator.operation_cost(operation)
    return too_costly(cost, max_cost, operation) if cost > max_cost else None


def _depends_on_variables(
    context: ExecutionContext, document: DocumentNode, operation: OperationDefinitionNode
) -> bool:
    key = (context.query or "", context.operation_name)
    known = _plans.get(key)
    if known is None:
        calculator = CostCalculator(context.schema._schema, document)
        calculator.operation_cost(operation)
        known = calculator.uses_variables
        _plans[key] = known
        if len(_plans) > PLAN_CACHE_SIZE:
            _plans.popitem(last=False)
    return known
