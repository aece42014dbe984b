"""The ledger over GraphQL: ``grantPoints``, ``deductPoints``, ``reverseTransaction``,
``settleExpirations``, ``transaction(id)``, ``ledgerSummary`` and the ``Member`` fields
``balance``, ``pendingBalance``, ``expiringPoints`` and ``history``.

Thin on purpose: it resolves ``externalId`` to a member, calls ``ledger.service`` and maps
results; every rule lives in the ledger. ``LedgerError`` is a ``DomainError``, so failures come
back as payload ``errors`` and the mutation's transaction is rolled back.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.dataloader import DataLoader
from strawberry.scalars import JSON
from strawberry.types import Info

from ledger import service as ledger
from ledger.tasks import run_settle_expirations
from ledger.types import Balances, TransactionView
from ledger.types import ExpiringLot as ExpiringLotRow
from members.program import get_program
from members.rewards import after_xp_credit
from members.service import require_member
from schema.context import Context
from schema.errors import UserError, bad_request
from schema.mutations import run_in_transaction
from schema.pagination import (
    Connection,
    Edge,
    PageInfo,
    decode_int_cursor,
    encode_cursor,
    page_size,
)
from schema.permissions import IsAdmin
from server.errors import DomainError, ErrorCode

if TYPE_CHECKING:
    from schema.member_type import Member

MAX_ID = 10**18


# --------------------------------------------------------------------------- types


@strawberry.type(description="One leg of a transaction: a signed amount on one account.")
class LedgerPosting:
    account: str = strawberry.field(description="e.g. member:42:points, system:issuance:points")
    currency: str
    amount: int
    member_db_id: strawberry.Private[int | None]

    @strawberry.field(description="The member whose account this is (none for system accounts).")
    async def member(
        self, info: Info
    ) -> Annotated[Member, strawberry.lazy("schema.member_type")] | None:
        return await _member_by_id(info, self.member_db_id)


@strawberry.type(description="A ledger transaction: postings that sum to zero per currency.")
class LedgerTransaction:
    id: strawberry.ID
    kind: str = strawberry.field(
        description="grant, deduct, spend, transfer, pending_credit, vest, void, expire, "
        "reversal, import, or a reward kind"
    )
    memo: str | None
    reference: str | None = strawberry.field(description="What caused it, e.g. lot:7")
    metadata: JSON
    created_at: datetime
    reverses_id: strawberry.ID | None = strawberry.field(
        description="The transaction this one reverses."
    )
    reversed_by_id: strawberry.ID | None = strawberry.field(
        description="The reversal of this transaction, if any."
    )
    postings: list[LedgerPosting]
    member_db_id: strawberry.Private[int | None]

    @strawberry.field(description="The member the transaction is about, if any.")
    async def member(
        self, info: Info
    ) -> Annotated[Member, strawberry.lazy("schema.member_type")] | None:
        return await _member_by_id(info, self.member_db_id)


@strawberry.type(description="Per currency: issued = outstanding + spent + expired.")
class LedgerSummary:
    currency: str
    issued: int = strawberry.field(description="Issued, net of voids and reversed credits.")
    spent: int = strawberry.field(description="Redeemed or deducted.")
    expired: int
    outstanding: int = strawberry.field(description="What members hold, pending included.")
    pending: int = strawberry.field(description="The part of outstanding not available yet.")


@strawberry.type(description="Points that expire together.")
class ExpiringLot:
    amount: int
    expires_at: datetime


@strawberry.type(description="One change of the member's balance.")
class LedgerEntry:
    transaction_id: strawberry.ID
    amount: int = strawberry.field(description="Signed: positive credits, negative debits.")
    currency: str
    kind: str
    memo: str | None
    created_at: datetime


def _id(value: int | None) -> strawberry.ID | None:
    return strawberry.ID(str(value)) if value is not None else None


def transaction_from_view(view: TransactionView) -> LedgerTransaction:
    return LedgerTransaction(
        id=strawberry.ID(str(view.id)),
        kind=view.kind,
        memo=view.memo,
        reference=view.reference,
        metadata=JSON(view.metadata),
        created_at=view.created_at,
        reverses_id=_id(view.reverses_id),
        reversed_by_id=_id(view.reversed_by_id),
        postings=[
            LedgerPosting(
                account=p.account_key,
                currency=p.currency,
                amount=p.amount,
                member_db_id=p.member_id,
            )
            for p in view.postings
        ],
        member_db_id=view.member_id,
    )


async def _member_by_id(
    info: Info, member_id: int | None
) -> Annotated[Member, strawberry.lazy("schema.member_type")] | None:
    if member_id is None:
        return None
    from schema.member_type import member_from_model
    from schema.members import member_by_id_loader

    model = await info.context.loader("member_by_id", member_by_id_loader).load(member_id)
    return member_from_model(model) if model else None


def _transaction_id(value: str) -> int:
    if not value.isdigit() or int(value) > MAX_ID:
        raise DomainError(ErrorCode.NOT_FOUND, "no such transaction", "transactionId")
    return int(value)


# --------------------------------------------------------------------------- loaders


def balances_loader(ctx: Context) -> DataLoader[tuple[int, str], Balances]:
    """(member id, currency) -> balances, one query per batch whatever the currencies."""

    async def load(keys: list[tuple[int, str]]) -> list[Balances]:
        async with ctx.querying() as connection:
            found = await ledger.balances_for_keys(connection, keys)
        return [found[key] for key in keys]

    return DataLoader(load_fn=load)


def expiring_loader(ctx: Context) -> DataLoader[tuple[int, int], list[ExpiringLotRow]]:
    """(member id, within days) -> points lots expiring, one query per distinct window."""

    async def load(keys: list[tuple[int, int]]) -> list[list[ExpiringLotRow]]:
        by_window: dict[int, list[int]] = {}
        for member_id, days in keys:
            by_window.setdefault(days, []).append(member_id)
        found: dict[tuple[int, int], list[ExpiringLotRow]] = {}
        now = datetime.now(UTC)
        async with ctx.reading() as session:
            for days, member_ids in by_window.items():
                rows = await ledger.expiring_lots_for_members(session, member_ids, days, now=now)
                found.update({(m, days): lots for m, lots in rows.items()})
        return [found[key] for key in keys]

    return DataLoader(load_fn=load)


# --------------------------------------------------------------------------- Member fields


@strawberry.type
class MemberLedgerFields:
    db_id: strawberry.Private[int]

    @strawberry.field(description="Available now (expired points excluded before settlement).")
    async def balance(self, info: Info, currency: str | None = "points") -> int:
        balances = await info.context.loader("ledger_balances", balances_loader).load(
            (self.db_id, currency or "points")
        )
        return balances.available

    @strawberry.field(description="Earned, not available yet (a return window).")
    async def pending_balance(self, info: Info, currency: str | None = "points") -> int:
        balances = await info.context.loader("ledger_balances", balances_loader).load(
            (self.db_id, currency or "points")
        )
        return balances.pending

    @strawberry.field(description="Points expiring within `withinDays`, soonest first.")
    async def expiring_points(self, info: Info, within_days: int | None = 30) -> list[ExpiringLot]:
        within_days = 30 if within_days is None else within_days
        if within_days < 0 or within_days > 36_500:
            raise bad_request("`withinDays` must be between 0 and 36500")
        lots = await info.context.loader("ledger_expiring", expiring_loader).load(
            (self.db_id, within_days)
        )
        return [ExpiringLot(amount=lot.amount, expires_at=lot.expires_at) for lot in lots]

    @strawberry.field(description="Balance changes, newest first.")
    async def history(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        currency: str | None = None,
    ) -> Connection[LedgerEntry]:
        limit = page_size(first)
        before = decode_int_cursor("posting", after)
        async with info.context.reading() as session:
            page = await ledger.history(
                session, self.db_id, currency=currency, first=limit, after=before
            )
        edges = [
            Edge(
                cursor=encode_cursor("posting", str(e.cursor)),
                node=LedgerEntry(
                    transaction_id=strawberry.ID(str(e.transaction_id)),
                    amount=e.amount,
                    currency=e.currency,
                    kind=e.kind,
                    memo=e.memo,
                    created_at=e.created_at,
                ),
            )
            for e in page.entries
        ]
        return Connection(
            edges=edges,
            page_info=PageInfo(
                has_next_page=page.has_next_page,
                end_cursor=edges[-1].cursor if edges else None,
            ),
        )


# --------------------------------------------------------------------------- queries


@strawberry.type
class LedgerQueries:
    @strawberry.field(permission_classes=[IsAdmin], description="A ledger transaction by id.")
    async def transaction(self, info: Info, id: strawberry.ID) -> LedgerTransaction | None:
        if not str(id).isdigit() or int(id) > MAX_ID:
            return None
        async with info.context.reading() as session:
            view = await ledger.get_transaction(session, int(id))
        return transaction_from_view(view) if view else None

    @strawberry.field(
        permission_classes=[IsAdmin],
        description="Issued, spent, expired and outstanding for one currency.",
    )
    async def ledger_summary(self, info: Info, currency: str | None = "points") -> LedgerSummary:
        async with info.context.reading() as session:
            summary = await ledger.ledger_summary(session, currency or "points")
        return LedgerSummary(
            currency=summary.currency,
            issued=summary.issued,
            spent=summary.spent,
            expired=summary.expired,
            outstanding=summary.outstanding,
            pending=summary.pending,
        )


# --------------------------------------------------------------------------- mutations


@strawberry.input
class GrantPointsInput:
    external_id: str
    amount: int
    reason: str
    idempotency_key: str
    currency: str | None = "points"
    expires_at: datetime | None = strawberry.field(
        default=None, description="Default: the program's pointsLifetimeDays from now."
    )


@strawberry.input
class DeductPointsInput:
    external_id: str
    amount: int
    reason: str
    idempotency_key: str
    currency: str | None = "points"


@strawberry.input
class ReverseTransactionInput:
    transaction_id: strawberry.ID
    reason: str


@strawberry.input
class SettleExpirationsInput:
    as_of: datetime | None = strawberry.field(
        default=None, description="Default now; never later than now."
    )


@strawberry.type
class TransactionPayload:
    transaction: LedgerTransaction | None
    errors: list[UserError]


@strawberry.type
class SettleExpirationsPayload:
    expired_lots: int
    expired_points: int
    errors: list[UserError]


def _failed(errors: list[UserError]) -> TransactionPayload:
    return TransactionPayload(transaction=None, errors=errors)


async def _payload(session: AsyncSession, transaction_id: int) -> TransactionPayload:
    view = await ledger.get_transaction(session, transaction_id)
    assert view is not None  # written in this very transaction
    return TransactionPayload(transaction=transaction_from_view(view), errors=[])


@strawberry.type
class LedgerMutations:
    @strawberry.mutation(
        permission_classes=[IsAdmin],
        description="Give a member points (or xp). Idempotent by idempotencyKey.",
    )
    async def grant_points(self, info: Info, input: GrantPointsInput) -> TransactionPayload:
        async def work(session: AsyncSession) -> TransactionPayload:
            member = await require_member(session, input.external_id)
            program = await get_program(session)
            posted = await ledger.grant(
                session,
                member.id,
                input.amount,
                idempotency_key=input.idempotency_key,
                currency=input.currency or "points",
                memo=input.reason,
                expires_at=input.expires_at,
                lifetime_days=program.points_lifetime_days,
            )
            if (input.currency or "points") == "xp" and not posted.replayed:
                await after_xp_credit(session, member.id, datetime.now(UTC))  # tier upgrade
            return await _payload(session, posted.transaction_id)

        return await run_in_transaction(info, work, _failed)

    @strawberry.mutation(
        permission_classes=[IsAdmin],
        description="Take points from a member (INSUFFICIENT_FUNDS rather than a negative "
        "balance). Idempotent by idempotencyKey.",
    )
    async def deduct_points(self, info: Info, input: DeductPointsInput) -> TransactionPayload:
        async def work(session: AsyncSession) -> TransactionPayload:
            member = await require_member(session, input.external_id)
            posted = await ledger.deduct(
                session,
                member.id,
                input.amount,
                idempotency_key=input.idempotency_key,
                currency=input.currency or "points",
                memo=input.reason,
            )
            return await _payload(session, posted.transaction_id)

        return await run_in_transaction(info, work, _failed)

    @strawberry.mutation(
        permission_classes=[IsAdmin],
        description="Undo a transaction once: spent lots come back (their expired part goes "
        "to expired), credits are taken back from their own lots first.",
    )
    async def reverse_transaction(
        self, info: Info, input: ReverseTransactionInput
    ) -> TransactionPayload:
        async def work(session: AsyncSession) -> TransactionPayload:
            posted = await ledger.reverse(
                session, _transaction_id(str(input.transaction_id)), memo=input.reason
            )
            return await _payload(session, posted.transaction_id)

        return await run_in_transaction(info, work, _failed)

    @strawberry.mutation(
        permission_classes=[IsAdmin],
        description="Expire every lot due by asOf now (the hourly worker does the same).",
    )
    async def settle_expirations(
        self, info: Info, input: SettleExpirationsInput | None = None
    ) -> SettleExpirationsPayload:
        as_of = input.as_of if input else None
        try:  # commits batch by batch, like the worker
            result = await run_settle_expirations(info.context.runtime, as_of)
        except DomainError as error:
            return SettleExpirationsPayload(
                expired_lots=0, expired_points=0, errors=[UserError.from_domain(error)]
            )
        return SettleExpirationsPayload(
            expired_lots=result.count, expired_points=result.amount, errors=[]
        )


__all__ = ["LedgerMutations", "LedgerQueries", "MemberLedgerFields"]
