"""Outbound webhooks (admin): ``webhooks``, ``webhookEventTypes``, ``webhookDeliveries`` (the
delivery log), ``upsertWebhook`` and ``retryWebhookDelivery``. How events are produced and
delivered: ``webhooks.outbox`` and ``webhooks.delivery``."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import Enum
from typing import Annotated

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.dataloader import DataLoader
from strawberry.scalars import JSON
from strawberry.types import Info

from schema.context import Context
from schema.errors import UserError, bad_request
from schema.mutations import run_in_transaction
from schema.pagination import Connection, build_connection, decode_int_cursor, page_size
from schema.permissions import IsAdmin
from server.errors import not_found
from webhooks import service
from webhooks.events import EVENT_TYPES
from webhooks.models import Webhook as WebhookModel
from webhooks.models import WebhookDeliveryAttempt as AttemptModel


@strawberry.type(description="An endpoint that receives signed webhook events.")
class Webhook:
    id: strawberry.ID
    url: str
    events: list[str]
    active: bool
    created_at: datetime
    updated_at: datetime


def webhook_from_model(model: WebhookModel) -> Webhook:
    return Webhook(
        id=strawberry.ID(str(model.id)),
        url=model.url,
        events=list(model.events),
        active=model.active,
        created_at=model.created_at,
        updated_at=model.updated_at,
    )


@strawberry.type(description="A webhook event type an endpoint can subscribe to.")
class WebhookEventType:
    name: str
    description: str


@strawberry.enum
class WebhookDeliveryStatus(Enum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


@strawberry.type(description="One HTTP attempt of a delivery.")
class WebhookDeliveryAttempt:
    attempt: int
    status_code: int | None
    error: str | None
    duration_ms: int
    at: datetime


def attempt_from_model(model: AttemptModel) -> WebhookDeliveryAttempt:
    return WebhookDeliveryAttempt(
        attempt=model.attempt,
        status_code=model.status_code,
        error=model.error,
        duration_ms=model.duration_ms,
        at=model.created_at,
    )


def webhooks_loader(ctx: Context) -> DataLoader[int, WebhookModel | None]:
    async def load(ids: list[int]) -> list[WebhookModel | None]:
        async with ctx.reading() as session:
            found = await service.webhooks_by_ids(session, ids)
        return [found.get(webhook_id) for webhook_id in ids]

    return DataLoader(load_fn=load)


def attempts_loader(ctx: Context) -> DataLoader[int, list[AttemptModel]]:
    async def load(ids: list[int]) -> list[list[AttemptModel]]:
        async with ctx.reading() as session:
            found = await service.attempts_of(session, ids)
        return [found[delivery_id] for delivery_id in ids]

    return DataLoader(load_fn=load)


@strawberry.type(
    description="One event to one endpoint: delivered at least once (receivers de-duplicate "
    "on eventId), retried with exponential backoff until it succeeds or runs out of attempts."
)
class WebhookDelivery:
    row: strawberry.Private[service.DeliveryRow]
    id: strawberry.ID
    event_id: strawberry.ID = strawberry.field(
        description="The event's id: the same on every attempt (header Questline-Event-Id)."
    )
    event_type: str
    status: WebhookDeliveryStatus
    attempt_count: int = strawberry.field(description="Attempts made so far.")
    last_status_code: int | None = strawberry.field(
        description="The HTTP status of the last attempt (null: no answer)."
    )
    last_error: str | None
    next_attempt_at: datetime | None = strawberry.field(
        description="PENDING: when the next attempt is due."
    )
    last_attempt_at: datetime | None
    delivered_at: datetime | None
    created_at: datetime

    @strawberry.field(description="The JSON body sent: {id, type, createdAt, data}.")
    def payload(self) -> JSON:
        return JSON(
            {
                "id": str(self.row.event_id),
                "type": self.row.event_type,
                "createdAt": self.row.event_created_at.isoformat(),
                "data": self.row.data,
            }
        )

    @strawberry.field
    async def webhook(self, info: Info) -> Webhook:
        model = await info.context.loader("webhooks", webhooks_loader).load(self.row.webhook_id)
        if model is None:  # deleting an endpoint deletes its deliveries
            raise not_found("no such webhook")
        return webhook_from_model(model)

    @strawberry.field(description="Every attempt, oldest first.")
    async def attempts(self, info: Info) -> list[WebhookDeliveryAttempt]:
        rows = await info.context.loader("webhook_attempts", attempts_loader).load(self.row.id)
        return [attempt_from_model(row) for row in rows]


def delivery_from_row(row: service.DeliveryRow) -> WebhookDelivery:
    return WebhookDelivery(
        row=row,
        id=strawberry.ID(str(row.id)),
        event_id=strawberry.ID(str(row.event_id)),
        event_type=row.event_type,
        status=WebhookDeliveryStatus(row.status),
        attempt_count=row.attempts,
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        next_attempt_at=row.next_attempt_at if row.status == "pending" else None,
        last_attempt_at=row.last_attempt_at,
        delivered_at=row.delivered_at,
        created_at=row.created_at,
    )


def _int_id(value: strawberry.ID, name: str) -> int:
    if not str(value).isdigit():
        raise bad_request(f"`{name}` is not a valid id")
    return int(value)


@strawberry.type
class WebhookQueries:
    @strawberry.field(permission_classes=[IsAdmin], description="Every endpoint, oldest first.")
    async def webhooks(self, info: Info) -> list[Webhook]:
        async with info.context.reading() as session:
            return [webhook_from_model(m) for m in await service.list_webhooks(session)]

    @strawberry.field(description="The event types endpoints can subscribe to.")
    def webhook_event_types(self) -> list[WebhookEventType]:
        return [WebhookEventType(name=k, description=v) for k, v in EVENT_TYPES.items()]

    @strawberry.field(permission_classes=[IsAdmin], description="The delivery log, newest first.")
    async def webhook_deliveries(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        status: WebhookDeliveryStatus | None = None,
        event: Annotated[
            str | None, strawberry.argument(description="An event type, e.g. points.earned.")
        ] = None,
        event_id: strawberry.ID | None = None,
        webhook_id: strawberry.ID | None = None,
    ) -> Connection[WebhookDelivery]:
        limit = page_size(first)
        before_id = decode_int_cursor("delivery", after)
        parsed_event: uuid.UUID | None = None
        if event_id is not None:
            try:
                parsed_event = uuid.UUID(str(event_id))
            except ValueError:
                raise bad_request("`eventId` is not a valid event id") from None
        async with info.context.reading() as session:
            rows = await service.list_deliveries(
                session,
                limit=limit + 1,
                before_id=before_id,
                status=status.value if status else None,
                event_type=event,
                webhook_id=_int_id(webhook_id, "webhookId") if webhook_id is not None else None,
                event_id=parsed_event,
            )
        return build_connection(rows, limit, "delivery", lambda r: str(r.id), delivery_from_row)


@strawberry.input
class UpsertWebhookInput:
    url: str = strawberry.field(description="http:// or https://; the endpoint's key.")
    events: list[str] = strawberry.field(description="Event types (see webhookEventTypes).")
    secret: str = strawberry.field(description="At least 16 characters; signs every request.")
    active: bool = True


@strawberry.type
class UpsertWebhookPayload:
    webhook: Webhook | None
    errors: list[UserError]


@strawberry.input
class RetryWebhookDeliveryInput:
    delivery_id: strawberry.ID


@strawberry.type
class RetryWebhookDeliveryPayload:
    delivery: WebhookDelivery | None
    errors: list[UserError]


@strawberry.type
class WebhookMutations:
    @strawberry.mutation(
        permission_classes=[IsAdmin],
        description="Register an endpoint, or change the events, secret or state of the one "
        "with this URL. It receives the events produced from then on.",
    )
    async def upsert_webhook(self, info: Info, input: UpsertWebhookInput) -> UpsertWebhookPayload:
        data = service.WebhookInput(
            url=input.url, events=input.events, secret=input.secret, active=input.active
        )

        async def work(session: AsyncSession) -> UpsertWebhookPayload:
            model = await service.upsert_webhook(
                session,
                data,
                allow_private=info.context.runtime.settings.webhook_allow_private_addresses,
            )
            return UpsertWebhookPayload(webhook=webhook_from_model(model), errors=[])

        return await run_in_transaction(
            info, work, lambda errors: UpsertWebhookPayload(webhook=None, errors=errors)
        )

    @strawberry.mutation(
        permission_classes=[IsAdmin],
        description="Attempt a failed or pending delivery again now (one more attempt).",
    )
    async def retry_webhook_delivery(
        self, info: Info, input: RetryWebhookDeliveryInput
    ) -> RetryWebhookDeliveryPayload:
        delivery_id = _int_id(input.delivery_id, "deliveryId")

        async def work(session: AsyncSession) -> RetryWebhookDeliveryPayload:
            await service.retry_delivery(session, delivery_id)
            row = await service.get_delivery(session, delivery_id)
            assert row is not None
            return RetryWebhookDeliveryPayload(delivery=delivery_from_row(row), errors=[])

        return await run_in_transaction(
            info, work, lambda errors: RetryWebhookDeliveryPayload(delivery=None, errors=errors)
        )
