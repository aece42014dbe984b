"""The redemption catalogue's types and reads: ``catalog``, admin ``redemptions``,
``lotteryDraw`` and ``Member.redemptions`` (the mutations are in
``schema.redemption_mutations``).

Coupon codes: the ``Redemption.code`` resolver is where a code is *shown*. For the member's own
token it records ``code_revealed_at`` in the same statement that reads the code (a write, in
its own short transaction, the first time only); a cancelled redemption gives its code back to
the pool only if that never happened. Admin reads do not count as shown.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated

import strawberry
from strawberry.dataloader import DataLoader
from strawberry.types import Info

from members import service as member_service
from redemptions import catalog, draws, service
from redemptions.models import CatalogItem as CatalogItemModel
from schema.context import Context
from schema.errors import forbidden
from schema.pagination import Connection, build_connection, decode_int_cursor, page_size
from schema.permissions import IsAdmin, IsAuthenticated, principal_of
from schema.program import Tier, all_tiers, tier_from_model
from server.auth import Role
from server.errors import not_found

if TYPE_CHECKING:
    from schema.member_type import Member


@strawberry.enum(
    description="REWARD: fulfilled later; COUPON: a code from a pool; LOTTERY: tickets."
)
class CatalogItemKind(Enum):
    REWARD = "REWARD"
    COUPON = "COUPON"
    LOTTERY = "LOTTERY"


@strawberry.enum
class RedemptionStatus(Enum):
    PENDING = "PENDING"
    FULFILLED = "FULFILLED"
    CANCELLED = "CANCELLED"


@strawberry.enum(description="ACTIVE until the draw (WON or LOST) or the ticket's cancellation.")
class LotteryEntryStatus(Enum):
    ACTIVE = "ACTIVE"
    CANCELLED = "CANCELLED"
    WON = "WON"
    LOST = "LOST"


# --------------------------------------------------------------------------- loaders


def item_loader(ctx: Context) -> DataLoader[int, CatalogItemModel | None]:
    async def load(ids: list[int]) -> list[CatalogItemModel | None]:
        async with ctx.reading() as session:
            found = await catalog.items_by_ids(session, ids)
        return [found.get(item_id) for item_id in ids]

    return DataLoader(load_fn=load)


def codes_available_loader(ctx: Context) -> DataLoader[int, int]:
    async def load(ids: list[int]) -> list[int]:
        async with ctx.reading() as session:
            found = await catalog.codes_available(session, ids)
        return [found.get(item_id, 0) for item_id in ids]

    return DataLoader(load_fn=load)


def draw_loader(ctx: Context) -> DataLoader[int, draws.DrawRecord | None]:
    async def load(ids: list[int]) -> list[draws.DrawRecord | None]:
        async with ctx.reading() as session:
            return [await draws.get_draw(session, item_id) for item_id in ids]

    return DataLoader(load_fn=load)


def entries_loader(ctx: Context) -> DataLoader[int, list[draws.LotteryEntryRow]]:
    async def load(ids: list[int]) -> list[list[draws.LotteryEntryRow]]:
        async with ctx.reading() as session:
            found = await draws.entries_for_redemptions(session, ids)
        return [found.get(redemption_id, []) for redemption_id in ids]

    return DataLoader(load_fn=load)


def reveal_loader(ctx: Context) -> DataLoader[tuple[int, int], str | None]:
    """(member id, redemption id) -> the code, recorded as shown; one short write
    transaction per member per request (it must commit: the code is about to be shown)."""

    async def load(keys: list[tuple[int, int]]) -> list[str | None]:
        by_member: dict[int, list[int]] = {}
        for member_id, redemption_id in keys:
            by_member.setdefault(member_id, []).append(redemption_id)
        codes: dict[int, str] = {}
        now = datetime.now(UTC)
        async with ctx.runtime.transaction() as session:
            for member_id, redemption_ids in by_member.items():
                codes.update(await service.reveal_codes(session, member_id, redemption_ids, now))
        return [codes.get(redemption_id) for _, redemption_id in keys]

    return DataLoader(load_fn=load)


# --------------------------------------------------------------------------- types


@strawberry.type(description="Something members can spend points on.")
class CatalogItem:
    db_id: strawberry.Private[int]
    min_tier_id: strawberry.Private[int | None]
    id: strawberry.ID
    key: str
    name: str
    description: str | None
    kind: CatalogItemKind
    cost: int = strawberry.field(description="Points per unit (per ticket for a LOTTERY).")
    stock: int | None = strawberry.field(description="Units still available; null: unlimited.")
    per_member_limit: int | None = strawberry.field(
        description="Units one member may hold (cancelled redemptions do not count)."
    )
    available_from: datetime | None
    available_until: datetime | None
    visible: bool = strawberry.field(description="Listed in `catalog` (hidden: unlisted).")
    drawn_at: datetime | None = strawberry.field(description="LOTTERY: when it was drawn.")

    @strawberry.field(description="The lowest tier that may redeem it; null: everyone.")
    async def min_tier(self, info: Info) -> Tier | None:
        if self.min_tier_id is None:
            return None
        tiers = await all_tiers(info.context)
        found = next((t for t in tiers if t.id == self.min_tier_id), None)
        return tier_from_model(found) if found else None

    @strawberry.field(description="COUPON: codes left in the pool; null for other kinds.")
    async def codes_available(self, info: Info) -> int | None:
        if self.kind is not CatalogItemKind.COUPON:
            return None
        count: int = await info.context.loader("codes_available", codes_available_loader).load(
            self.db_id
        )
        return count

    @strawberry.field(description="LOTTERY: the draw, once held.")
    async def lottery_draw(self, info: Info) -> LotteryDraw | None:
        if self.kind is not CatalogItemKind.LOTTERY or self.drawn_at is None:
            return None
        record = await info.context.loader("lottery_draw", draw_loader).load(self.db_id)
        return draw_from_record(record) if record else None


def item_from_model(model: CatalogItemModel) -> CatalogItem:
    return CatalogItem(
        db_id=model.id,
        min_tier_id=model.min_tier_id,
        id=strawberry.ID(str(model.id)),
        key=model.key,
        name=model.name,
        description=model.description,
        kind=CatalogItemKind(model.kind),
        cost=model.cost,
        stock=model.stock,
        per_member_limit=model.per_member_limit,
        available_from=model.available_from,
        available_until=model.available_until,
        visible=model.visible,
        drawn_at=model.drawn_at,
    )


async def load_item(info: Info, item_id: int) -> CatalogItem:
    model = await info.context.loader("catalog_item", item_loader).load(item_id)
    if model is None:  # items are never deleted
        raise not_found("no such catalogue item")
    return item_from_model(model)


@strawberry.type(description="One lottery ticket.")
class LotteryEntry:
    id: strawberry.ID
    status: LotteryEntryStatus


def entry_from_row(row: draws.LotteryEntryRow) -> LotteryEntry:
    return LotteryEntry(id=strawberry.ID(str(row.id)), status=LotteryEntryStatus(row.status))


@strawberry.type(
    description="A lottery draw and what it takes to re-derive it: score every ticket with "
    'SHA-256(seed + ":" + entryId), rank by (score, entryId), and walk down the ranking taking '
    "a ticket unless its member has already won, until `winnersRequested` have won. "
    "`entriesDigest` is SHA-256 of the drawn entry ids, ascending, joined by commas."
)
class LotteryDraw:
    item_db_id: strawberry.Private[int]
    seed: str
    method: str
    winners_requested: int
    entry_count: int
    entries_digest: str
    drawn_at: datetime
    winning_entry_ids: list[strawberry.ID] = strawberry.field(description="Best first.")

    @strawberry.field
    async def item(self, info: Info) -> CatalogItem:
        return await load_item(info, self.item_db_id)

    @strawberry.field(description="Every ticket of the lottery in id order, with its outcome.")
    async def entries(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> Connection[LotteryEntry]:
        limit = page_size(first)
        after_id = decode_int_cursor("entry", after)
        async with info.context.reading() as session:
            rows = await draws.lottery_entries(
                session, self.item_db_id, limit=limit + 1, after_id=after_id
            )
        return build_connection(rows, limit, "entry", lambda r: str(r.id), entry_from_row)


def draw_from_record(record: draws.DrawRecord) -> LotteryDraw:
    return LotteryDraw(
        item_db_id=record.item_id,
        seed=record.seed,
        method=record.method,
        winners_requested=record.winners_requested,
        entry_count=record.entry_count,
        entries_digest=record.entries_digest,
        drawn_at=record.drawn_at,
        winning_entry_ids=[strawberry.ID(str(i)) for i in record.winning_entry_ids],
    )


@strawberry.type(description="A member's redemption of a catalogue item.")
class Redemption:
    db_id: strawberry.Private[int]
    member_db_id: strawberry.Private[int]
    item_db_id: strawberry.Private[int]
    code_value: strawberry.Private[str | None]
    code_shown: strawberry.Private[bool]
    id: strawberry.ID
    quantity: int
    cost: int = strawberry.field(description="Points spent on all units.")
    status: RedemptionStatus
    created_at: datetime
    fulfilled_at: datetime | None
    cancelled_at: datetime | None
    cancel_reason: str | None
    spend_transaction_id: strawberry.ID
    refund_transaction_id: strawberry.ID | None

    @strawberry.field
    async def item(self, info: Info) -> CatalogItem:
        return await load_item(info, self.item_db_id)

    @strawberry.field(
        description="COUPON: the code. Once returned to the member it counts as shown and "
        "never goes back to the pool, even if the redemption is cancelled."
    )
    async def code(self, info: Info) -> str | None:
        if self.code_value is None:
            return None
        if principal_of(info).role is not Role.MEMBER or self.code_shown:
            return self.code_value
        code: str | None = await info.context.loader("reveal_code", reveal_loader).load(
            (self.member_db_id, self.db_id)
        )
        return code

    @strawberry.field(description="LOTTERY: the tickets this redemption bought.")
    async def lottery_entries(self, info: Info) -> list[LotteryEntry]:
        rows = await info.context.loader("lottery_entries", entries_loader).load(self.db_id)
        return [entry_from_row(row) for row in rows]

    @strawberry.field
    async def member(
        self, info: Info
    ) -> Annotated[Member, strawberry.lazy("schema.member_type")] | None:
        from schema.member_type import member_from_model
        from schema.members import member_by_id_loader

        model = await info.context.loader("member_by_id", member_by_id_loader).load(
            self.member_db_id
        )
        return member_from_model(model) if model else None


def redemption_from_row(row: service.RedemptionRow) -> Redemption:
    return Redemption(
        db_id=row.id,
        member_db_id=row.member_id,
        item_db_id=row.item_id,
        code_value=row.code,
        code_shown=row.code_revealed_at is not None,
        id=strawberry.ID(str(row.id)),
        quantity=row.quantity,
        cost=row.cost,
        status=RedemptionStatus(row.status),
        created_at=row.created_at,
        fulfilled_at=row.fulfilled_at,
        cancelled_at=row.cancelled_at,
        cancel_reason=row.cancel_reason,
        spend_transaction_id=strawberry.ID(str(row.spend_transaction_id)),
        refund_transaction_id=(
            strawberry.ID(str(row.refund_transaction_id)) if row.refund_transaction_id else None
        ),
    )


@strawberry.type
class MemberRedemptionFields:
    db_id: strawberry.Private[int]

    @strawberry.field(description="The member's redemptions, newest first.")
    async def redemptions(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> Connection[Redemption]:
        limit = page_size(first)
        before_id = decode_int_cursor("redemption", after)
        async with info.context.reading() as session:
            rows = await service.member_redemptions(
                session, self.db_id, limit=limit + 1, before_id=before_id
            )
        return build_connection(rows, limit, "redemption", lambda r: str(r.id), redemption_from_row)


# --------------------------------------------------------------------------- queries


def parse_id(value: str, field: str) -> int:
    if not value.isdigit() or len(value) > 18:
        raise not_found(f"no such {field}", field)
    return int(value)


@strawberry.type
class RedemptionQueries:
    @strawberry.field(
        description="Catalogue items members can look at now (visible, within their window, "
        "lottery not drawn), oldest first; sold-out items are listed with stock 0. "
        "`includeUnavailable` (admin) lists every item."
    )
    async def catalog(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        include_unavailable: bool = False,
    ) -> Connection[CatalogItem]:
        if include_unavailable and principal_of(info).role is not Role.ADMIN:
            raise forbidden("includeUnavailable is for admins")
        limit = page_size(first)
        after_id = decode_int_cursor("item", after)
        async with info.context.reading() as session:
            rows = await catalog.list_catalog(
                session,
                limit=limit + 1,
                after_id=after_id,
                include_unavailable=include_unavailable,
            )
        return build_connection(rows, limit, "item", lambda i: str(i.id), item_from_model)

    @strawberry.field(description="One catalogue item by key (listed or not).")
    async def catalog_item(self, info: Info, key: str) -> CatalogItem | None:
        async with info.context.reading() as session:
            model = await catalog.get_item_by_key(session, key)
        return item_from_model(model) if model else None

    @strawberry.field(description="A lottery's draw, once held (public: it is the audit trail).")
    async def lottery_draw(self, info: Info, item_key: str) -> LotteryDraw | None:
        async with info.context.reading() as session:
            item = await catalog.get_item_by_key(session, item_key)
            record = await draws.get_draw(session, item.id) if item else None
        return draw_from_record(record) if record else None

    @strawberry.field(permission_classes=[IsAdmin], description="Every redemption, newest first.")
    async def redemptions(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        status: RedemptionStatus | None = None,
        item_key: str | None = None,
    ) -> Connection[Redemption]:
        limit = page_size(first)
        before_id = decode_int_cursor("redemption", after)
        async with info.context.reading() as session:
            rows = await service.list_redemptions(
                session,
                limit=limit + 1,
                before_id=before_id,
                status=status.value if status else None,
                item_key=item_key,
            )
        return build_connection(rows, limit, "redemption", lambda r: str(r.id), redemption_from_row)

    @strawberry.field(
        permission_classes=[IsAuthenticated],
        description="One redemption (admin; a member: its own).",
    )
    async def redemption(self, info: Info, id: strawberry.ID) -> Redemption | None:
        principal = principal_of(info)
        if principal.role not in (Role.ADMIN, Role.MEMBER):
            raise forbidden()
        if not str(id).isdigit() or len(str(id)) > 18:
            return None
        async with info.context.reading() as session:
            row = await service.get_redemption(session, int(id))
            if row is not None and principal.role is Role.MEMBER:
                member = await member_service.get_member_by_external_id(
                    session, principal.external_id or ""
                )
                if member is None or member.id != row.member_id:
                    raise forbidden("a member token can only see its own redemptions")
        return redemption_from_row(row) if row else None


__all__ = ["MemberRedemptionFields", "RedemptionQueries"]
