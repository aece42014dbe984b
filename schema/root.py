"""The root schema: every domain module's queries and mutations merged into one.

To add a domain: write ``schema/<domain>.py`` with ``<Domain>Queries`` / ``<Domain>Mutations``
and list them below.
"""

from __future__ import annotations

import strawberry
from strawberry.extensions import (
    MaxAliasesLimiter,
    QueryDepthLimiter,
)
from strawberry.tools import merge_types

from schema.badges import BadgeMutations, BadgeQueries
from schema.campaigns import CampaignMutations, CampaignQueries
from schema.cost import cost_limit_rule
from schema.errors import should_mask_error
from schema.execution import ExecutionContext
from schema.extensions import RequestPolicy
from schema.leaderboards import LeaderboardMutations, LeaderboardQueries
from schema.ledger import LedgerMutations, LedgerQueries
from schema.members import MemberMutations, MemberQueries
from schema.program import ProgramMutations, ProgramQueries
from schema.quests import QuestMutations, QuestQueries
from schema.redemption_mutations import RedemptionMutations
from schema.redemptions import RedemptionQueries
from schema.subscriptions import Subscription
from schema.webhooks import WebhookMutations, WebhookQueries
from server.settings import Settings, get_settings

QUERIES: tuple[type, ...] = (
    MemberQueries,
    LedgerQueries,
    ProgramQueries,
    QuestQueries,
    BadgeQueries,
    CampaignQueries,
    RedemptionQueries,
    LeaderboardQueries,
    WebhookQueries,
)
MUTATIONS: tuple[type, ...] = (
    MemberMutations,
    LedgerMutations,
    ProgramMutations,
    QuestMutations,
    BadgeMutations,
    CampaignMutations,
    RedemptionMutations,
    LeaderboardMutations,
    WebhookMutations,
)

Query = merge_types("Query", QUERIES)
Mutation = merge_types("Mutation", MUTATIONS)


def build_schema(settings: Settings | None = None) -> strawberry.Schema:
    settings = settings or get_settings()
    # The limit rules are built once: strawberry constructs extensions per request, and the
    # validation cache is keyed by the rule classes, so rules made per request (as the
    # limiter extensions do) would miss the cache on every request.
    limit_rules = [
        *QueryDepthLimiter(max_depth=settings.max_query_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=settings.max_aliases).validation_rules,
        cost_limit_rule(settings.max_query_cost),
    ]
    return strawberry.Schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        execution_context_class=ExecutionContext,
        extensions=[
            lambda: RequestPolicy(
                max_tokens=settings.max_tokens,
                max_cost=settings.max_query_cost,
                validation_rules=limit_rules,
                should_mask_error=should_mask_error,
            ),
        ],
    )


schema = build_schema()
