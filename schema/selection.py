"""What a resolver's own selection asks for, read from the query's syntax tree.

``info.selected_fields`` would first convert the whole selection into strawberry objects, on
every request; these helpers only walk the parsed document (fragments included), so a
resolver can fetch ahead what its sub-fields will want at the cost of a few attribute reads.
"""

from __future__ import annotations

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    SelectionSetNode,
)
from strawberry.types import Info


def asks_for(info: Info, *names: str) -> bool:
    """Whether the field's own selection (one level down, through fragments) contains a
    field called one of ``names``."""
    raw = info._raw_info
    wanted = frozenset(names)
    return any(_selects(node.selection_set, wanted, raw.fragments) for node in raw.field_nodes)


def _selects(
    selection_set: SelectionSetNode | None,
    names: frozenset[str],
    fragments: dict[str, FragmentDefinitionNode],
) -> bool:
    if selection_set is None:
        return False
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            if selection.name.value in names:
                return True
        elif isinstance(selection, InlineFragmentNode):
            if _selects(selection.selection_set, names, fragments):
                return True
        elif isinstance(selection, FragmentSpreadNode):
            fragment = fragments.get(selection.name.value)
            if fragment is not None and _selects(fragment.selection_set, names, fragments):
                return True
    return False
