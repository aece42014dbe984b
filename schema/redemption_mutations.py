"""The redemption mutations: ``redeem``, ``cancelRedemption``, ``fulfillRedemption``,
``upsertCatalogItem`` and ``drawLottery`` (their inputs and payloads). The types they answer
with, the loaders and the queries are in ``schema.redemptions``."""

from __future__ import annotations

from datetime import datetime

import strawberry
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.types import Info

from members import service as member_service
from redemptions import catalog, draws, service
from schema.errors import UserError, forbidden
from schema.mutations import run_as_one_statement, run_in_transaction
from schema.permissions import IsAdmin, IsAuthenticated, IsMember, principal_of
from schema.redemptions import (
    CatalogItem,
    CatalogItemKind,
    LotteryDraw,
    Redemption,
    draw_from_record,
    item_from_model,
    parse_id,
    redemption_from_row,
)
from server.auth import Role
from server.errors import DomainError
from server.rawsql import Autocommit


@strawberry.input
class UpsertCatalogItemInput:
    key: str
    name: str
    cost: int = strawberry.field(description="Points per unit (per ticket for a LOTTERY).")
    description: str | None = None
    stock: int | None = strawberry.field(
        default=strawberry.UNSET,
        description="Units available from now on; null: unlimited; omitted: unchanged "
        "(a new item: unlimited), so an edit never overwrites concurrent sales.",
    )
    per_member_limit: int | None = None
    min_tier: str | None = strawberry.field(default=None, description="A tier key.")
    available_from: datetime | None = None
    available_until: datetime | None = None
    kind: CatalogItemKind = CatalogItemKind.REWARD
    codes: list[str] | None = strawberry.field(
        default=None,
        description="COUPON: codes to add to the pool (codes already there are skipped).",
    )
    visible: bool = strawberry.field(
        default=True, description="Listed in `catalog`; a hidden item stays redeemable by key."
    )


@strawberry.type
class UpsertCatalogItemPayload:
    catalog_item: CatalogItem | None
    codes_added: int = 0
    errors: list[UserError]


@strawberry.input
class RedeemInput:
    item_key: str
    quantity: int = 1
    idempotency_key: str


@strawberry.type
class RedeemPayload:
    redemption: Redemption | None
    errors: list[UserError]


@strawberry.input
class CancelRedemptionInput:
    redemption_id: strawberry.ID
    reason: str | None = None


@strawberry.type
class CancelRedemptionPayload:
    redemption: Redemption | None
    errors: list[UserError]


@strawberry.input
class FulfillRedemptionInput:
    redemption_id: strawberry.ID


@strawberry.type
class FulfillRedemptionPayload:
    redemption: Redemption | None
    errors: list[UserError]


@strawberry.input
class DrawLotteryInput:
    item_key: str
    winners: int


@strawberry.type
class DrawLotteryPayload:
    draw: LotteryDraw | None
    winners: list[Redemption]
    errors: list[UserError]


@strawberry.type
class RedemptionMutations:
    @strawberry.mutation(
        permission_classes=[IsAdmin], description="Create or update a catalogue item by key."
    )
    async def upsert_catalog_item(
        self, info: Info, input: UpsertCatalogItemInput
    ) -> UpsertCatalogItemPayload:
        data = catalog.CatalogItemInput(
            key=input.key,
            name=input.name,
            cost=input.cost,
            description=input.description,
            kind=input.kind.value,
            stock=None if input.stock is strawberry.UNSET else input.stock,
            set_stock=input.stock is not strawberry.UNSET,
            per_member_limit=input.per_member_limit,
            min_tier=input.min_tier,
            available_from=input.available_from,
            available_until=input.available_until,
            visible=input.visible,
            codes=tuple(input.codes or ()),
        )

        async def work(session: AsyncSession) -> UpsertCatalogItemPayload:
            outcome = await catalog.upsert_item(session, data)
            return UpsertCatalogItemPayload(
                catalog_item=item_from_model(outcome.item),
                codes_added=outcome.codes_added,
                errors=[],
            )

        return await run_in_transaction(
            info, work, lambda errors: UpsertCatalogItemPayload(catalog_item=None, errors=errors)
        )

    @strawberry.mutation(
        permission_classes=[IsMember],
        description="Spend points on a catalogue item (member token); idempotent by key.",
    )
    async def redeem(self, info: Info, input: RedeemInput) -> RedeemPayload:
        external_id = principal_of(info).external_id or ""

        async def work(session: AsyncSession | Autocommit) -> RedeemPayload:
            outcome = await service.redeem(
                session,
                external_id=external_id,
                item_key=input.item_key,
                quantity=input.quantity,
                idempotency_key=input.idempotency_key,
            )
            return RedeemPayload(redemption=redemption_from_row(outcome.redemption), errors=[])

        def failed(errors: list[UserError]) -> RedeemPayload:
            return RedeemPayload(redemption=None, errors=errors)

        try:
            return await run_as_one_statement(info, service.REDEEM_TOPICS, work, work, failed)
        except DBAPIError as error:  # in a transaction, the stock is taken by the commit
            refusal = service.database_refusal(error)
            if refusal is None:
                raise
            return failed([UserError.from_domain(refusal)])

    @strawberry.mutation(
        permission_classes=[IsAuthenticated],
        description="Cancel a PENDING redemption and refund it (admin; a member: its own).",
    )
    async def cancel_redemption(
        self, info: Info, input: CancelRedemptionInput
    ) -> CancelRedemptionPayload:
        principal = principal_of(info)
        if principal.role not in (Role.ADMIN, Role.MEMBER):
            raise forbidden()
        try:
            redemption_id = parse_id(str(input.redemption_id), "redemptionId")
        except DomainError as error:
            return CancelRedemptionPayload(redemption=None, errors=[UserError.from_domain(error)])
        by_member = principal.role is Role.MEMBER
        if by_member:
            async with info.context.reading() as session:
                row = await service.get_redemption(session, redemption_id)
                member = await member_service.get_member_by_external_id(
                    session, principal.external_id or ""
                )
            if row is not None and (member is None or member.id != row.member_id):
                raise forbidden("a member token can only cancel its own redemptions")

        async def work(session: AsyncSession) -> CancelRedemptionPayload:
            row = await service.cancel(
                session, redemption_id, reason=input.reason, by_member=by_member
            )
            return CancelRedemptionPayload(redemption=redemption_from_row(row), errors=[])

        return await run_in_transaction(
            info, work, lambda errors: CancelRedemptionPayload(redemption=None, errors=errors)
        )

    @strawberry.mutation(
        permission_classes=[IsAdmin], description="Mark a PENDING redemption as handed over."
    )
    async def fulfill_redemption(
        self, info: Info, input: FulfillRedemptionInput
    ) -> FulfillRedemptionPayload:
        async def work(session: AsyncSession) -> FulfillRedemptionPayload:
            redemption_id = parse_id(str(input.redemption_id), "redemptionId")
            row = await service.fulfill(session, redemption_id)
            return FulfillRedemptionPayload(redemption=redemption_from_row(row), errors=[])

        return await run_in_transaction(
            info, work, lambda errors: FulfillRedemptionPayload(redemption=None, errors=errors)
        )

    @strawberry.mutation(
        permission_classes=[IsAdmin],
        description="Draw a LOTTERY item's winners, once (see `LotteryDraw` for the method).",
    )
    async def draw_lottery(self, info: Info, input: DrawLotteryInput) -> DrawLotteryPayload:
        async def work(session: AsyncSession) -> DrawLotteryPayload:
            record = await draws.draw_lottery(session, input.item_key, input.winners)
            winners = await service.redemptions_of_entries(session, record.winning_entry_ids)
            return DrawLotteryPayload(
                draw=draw_from_record(record),
                winners=[redemption_from_row(row) for row in winners],
                errors=[],
            )

        return await run_in_transaction(
            info, work, lambda errors: DrawLotteryPayload(draw=None, winners=[], errors=errors)
        )


__all__ = ["RedemptionMutations"]
