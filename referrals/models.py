"""Referral rewards. The referral link itself is ``members.referred_by_id`` (set once, when the
referee registers with the referrer's code). Migration ``0005`` creates these tables."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Date, DateTime, ForeignKey, Identity, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from members.models import Member
from server.db import Base

# ``Member.referrals`` counts a member's referees: index the link (the column belongs to the
# members table; the index is created by migration 0005 with the rest of referrals).
REFERRED_BY_INDEX = Index("ix_members_referred_by_id", Member.referred_by_id)


class ReferralReward(Base):
    """A referee's qualifying event was rewarded: at most one row per referee, ever.

    ``referrer_outcome`` says what the referrer got: ``rewarded``, ``capped`` (the monthly
    limit was reached), ``suspended`` (the referrer was not active) or ``no_reward`` (the
    program's referrer reward was 0).
    """

    __tablename__ = "referral_rewards"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    referee_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("members.id"), unique=True, nullable=False
    )
    referrer_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("members.id"), nullable=False, index=True
    )
    # The qualifying event (no foreign key: events belong to the quests domain).
    event_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    referee_amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    referrer_amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    referrer_outcome: Mapped[str] = mapped_column(String(16), nullable=False)
    # The referrer's month (first day, program timezone) this referral counted in.
    month: Mapped[date] = mapped_column(Date, nullable=False)
    referee_transaction_id: Mapped[int | None] = mapped_column(BigInteger)
    referrer_transaction_id: Mapped[int | None] = mapped_column(BigInteger)
    rewarded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class ReferrerMonth(Base):
    """How many referrer rewards a member received in a month: the monthly cap is enforced
    by a conditional increment of this row (see ``referrals.service``)."""

    __tablename__ = "referral_monthly_counts"

    referrer_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("members.id"), primary_key=True)
    month: Mapped[date] = mapped_column(Date, primary_key=True)
    rewarded: Mapped[int] = mapped_column(Integer, nullable=False)
