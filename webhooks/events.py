"""The webhook event types and what produces each one (see ``webhooks.outbox``)."""

from __future__ import annotations

# type -> when it is sent; the descriptions are also the API's documentation.
EVENT_TYPES: dict[str, str] = {
    "member.registered": "A member was created (registerMember; not a repeated registration).",
    "points.earned": "A member's available balance was credited (any currency, any kind).",
    "points.expiring": "A lot of points will expire within the configured number of days.",
    "points.expired": "A lot of points expired (expiry settlement).",
    "badge.awarded": "A member earned a badge or a higher level of it.",
    "title.granted": "A member was granted a title.",
    "tier.changed": "A member moved to another tier (upgrade, or the retention job).",
    "quest.completed": "A member completed a quest in a period.",
    "redemption.created": "A member redeemed a catalogue item.",
    "redemption.fulfilled": "A redemption was fulfilled (lottery: also a losing ticket).",
    "redemption.cancelled": "A redemption was cancelled and its points refunded.",
    "member.at_risk": "The inactivity scan moved a member to the AT_RISK lifecycle stage.",
}
