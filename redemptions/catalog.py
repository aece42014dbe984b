"""The catalogue: items members can redeem (rules in ``redemptions.service``'s docstring),
their coupon-code pools, and the catalogue reads. Plain async functions taking an
``AsyncSession``; they never commit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from members.models import Tier
from members.validation import validate_key
from redemptions.models import ITEM_KINDS, CatalogItem
from server.errors import DomainError, ErrorCode, invalid, not_found
from server.rawsql import driver

MAX_TOTAL_COST = 1_000_000_000
MAX_CODES_PER_CALL = 10_000
MAX_CODE_LENGTH = 255


@dataclass(frozen=True)
class CatalogItemInput:
    key: str
    name: str
    cost: int
    description: str | None = None
    kind: str = "REWARD"
    stock: int | None = None
    set_stock: bool = False  # False: keep the current stock (new items: unlimited)
    per_member_limit: int | None = None
    min_tier: str | None = None  # a tier key
    available_from: datetime | None = None
    available_until: datetime | None = None
    visible: bool = True
    codes: tuple[str, ...] = ()


@dataclass(frozen=True)
class UpsertOutcome:
    item: CatalogItem
    codes_added: int


def aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def whole_number(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _clean_codes(codes: Sequence[str]) -> list[str]:
    if len(codes) > MAX_CODES_PER_CALL:
        raise invalid(f"at most {MAX_CODES_PER_CALL} codes per call", "codes")
    cleaned: list[str] = []
    seen: set[str] = set()
    for code in codes:
        value = code.strip()
        if not value or len(value) > MAX_CODE_LENGTH:
            raise invalid(f"each code must be 1 to {MAX_CODE_LENGTH} characters", "codes")
        if value not in seen:
            seen.add(value)
            cleaned.append(value)
    return cleaned


def _validate_item(data: CatalogItemInput) -> list[str]:
    validate_key(data.key)
    if not data.name.strip() or len(data.name) > 255:
        raise invalid("name must be 1 to 255 characters", "name")
    if data.description is not None and len(data.description) > 10_000:
        raise invalid("description is limited to 10,000 characters", "description")
    if data.kind not in ITEM_KINDS:
        raise invalid(f"kind must be one of {', '.join(ITEM_KINDS)}", "kind")
    if not whole_number(data.cost) or not 0 < data.cost <= MAX_TOTAL_COST:
        raise invalid("cost must be between 1 and 1,000,000,000", "cost")
    if (
        data.set_stock
        and data.stock is not None
        and (not whole_number(data.stock) or data.stock < 0)
    ):
        raise invalid("stock cannot be negative (null: unlimited)", "stock")
    if data.per_member_limit is not None and data.per_member_limit < 1:
        raise invalid("perMemberLimit must be at least 1 (null: no limit)", "perMemberLimit")
    start, end = aware(data.available_from), aware(data.available_until)
    if start is not None and end is not None and start >= end:
        raise invalid("availableFrom must be before availableUntil", "availableUntil")
    if data.codes and data.kind != "COUPON":
        raise invalid("codes belong to COUPON items only", "codes")
    return _clean_codes(data.codes)


async def upsert_item(session: AsyncSession, data: CatalogItemInput) -> UpsertOutcome:
    """Create or update the item with ``data.key``; ``codes`` are added to a COUPON item's
    pool (codes it already has are skipped, never duplicated)."""
    codes = _validate_item(data)
    min_tier_id: int | None = None
    if data.min_tier is not None:
        min_tier_id = await session.scalar(select(Tier.id).where(Tier.key == data.min_tier))
        if min_tier_id is None:
            raise not_found(f"no tier {data.min_tier!r}", "minTier")
    existing = await session.scalar(
        select(CatalogItem).where(CatalogItem.key == data.key).with_for_update()
    )
    if existing is not None and existing.kind != data.kind:
        used = await session.scalar(
            text("SELECT EXISTS (SELECT 1 FROM redemptions WHERE item_id = :id)"),
            {"id": existing.id},
        )
        if used:
            raise DomainError(
                ErrorCode.CONFLICT, "the kind of an item with redemptions cannot change", "kind"
            )
    values: dict[str, Any] = {
        "name": data.name.strip(),
        "description": data.description,
        "kind": data.kind,
        "cost": data.cost,
        "per_member_limit": data.per_member_limit,
        "min_tier_id": min_tier_id,
        "available_from": aware(data.available_from),
        "available_until": aware(data.available_until),
        "visible": data.visible,
        "updated_at": text("now()"),
    }
    if data.set_stock:
        values["stock"] = data.stock
    item_id = await session.scalar(
        insert(CatalogItem)
        .values(key=data.key, **values)
        .on_conflict_do_update(index_elements=[CatalogItem.key], set_=values)
        .returning(CatalogItem.id)
    )
    assert item_id is not None
    added = 0
    if codes:
        conn = await driver(session)
        added = int(
            await conn.fetchval(
                """
                WITH added AS (
                    INSERT INTO coupon_codes (item_id, code)
                    SELECT $1, unnest($2::text[])
                    ON CONFLICT (item_id, code) DO NOTHING
                    RETURNING 1
                ) SELECT count(*) FROM added
                """,
                item_id,
                codes,
            )
        )
    item = await session.get_one(CatalogItem, item_id, populate_existing=True)
    return UpsertOutcome(item, added)


async def list_catalog(
    session: AsyncSession,
    *,
    limit: int,
    after_id: int | None,
    now: datetime | None = None,
    include_unavailable: bool = False,
) -> list[CatalogItem]:
    """Items in id order (keyset): by default those a member could look at now (visible, in
    their window, lottery not drawn); sold-out items are listed with ``stock`` 0."""
    query = select(CatalogItem).order_by(CatalogItem.id).limit(limit)
    if after_id is not None:
        query = query.where(CatalogItem.id > after_id)
    if not include_unavailable:
        moment = now or datetime.now(UTC)
        query = query.where(
            CatalogItem.visible.is_(True),
            CatalogItem.drawn_at.is_(None),
            (CatalogItem.available_from.is_(None)) | (CatalogItem.available_from <= moment),
            (CatalogItem.available_until.is_(None)) | (CatalogItem.available_until > moment),
        )
    return list(await session.scalars(query))


async def items_by_ids(session: AsyncSession, ids: Sequence[int]) -> dict[int, CatalogItem]:
    rows = await session.scalars(select(CatalogItem).where(CatalogItem.id.in_(ids)))
    return {item.id: item for item in rows}


async def get_item_by_key(session: AsyncSession, key: str) -> CatalogItem | None:
    return await session.scalar(select(CatalogItem).where(CatalogItem.key == key))


async def codes_available(session: AsyncSession, item_ids: Sequence[int]) -> dict[int, int]:
    """Unassigned codes per COUPON item (items without any are absent)."""
    rows = await session.execute(
        text(
            "SELECT item_id, count(*) FROM coupon_codes"
            " WHERE item_id = ANY(:ids) AND redemption_id IS NULL GROUP BY item_id"
        ),
        {"ids": list(item_ids)},
    )
    return {int(item_id): int(count) for item_id, count in rows}
