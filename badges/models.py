"""Badges (collected, optionally leveled) and titles (held, optionally scarce and expiring).

Migration ``0005`` creates exactly these tables; a test compares the two.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base


class Badge(Base):
    """A badge. ``levels`` > 1 makes it leveled (1 bronze, 2 silver, 3 gold...); a ``secret``
    badge is left out of the public list (a member sees it once earned)."""

    __tablename__ = "badges"
    __table_args__ = (CheckConstraint("levels >= 1", name="levels_positive"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    image_url: Mapped[str | None] = mapped_column(String(2048))
    levels: Mapped[int] = mapped_column(Integer, nullable=False, server_default="1")
    secret: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


class MemberBadge(Base):
    """One row per member and badge (never two): ``level`` only ever goes up."""

    __tablename__ = "member_badges"
    __table_args__ = (
        UniqueConstraint("member_id", "badge_id", name="uq_member_badges_member_id_badge_id"),
        CheckConstraint("level >= 1", name="level_positive"),
        Index("ix_member_badges_badge_id", "badge_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    member_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("members.id"), nullable=False)
    badge_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("badges.id"), nullable=False)
    level: Mapped[int] = mapped_column(Integer, nullable=False)
    # When the current level was reached, and when the badge was first earned.
    awarded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    first_awarded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class Title(Base):
    """A title such as "Chief Experience Officer"; ``max_holders`` caps how many members hold
    it at once (null: no cap)."""

    __tablename__ = "titles"
    __table_args__ = (
        CheckConstraint("max_holders IS NULL OR max_holders >= 1", name="max_holders_positive"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    max_holders: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


class MemberTitle(Base):
    """A member holds a title (until ``expires_at``, if set). Revoking deletes the row.

    ``equipped`` marks the one title the member shows (``activeTitle``): at most one per
    member, enforced by a partial unique index. An equipped title that has expired is simply
    not shown.
    """

    __tablename__ = "member_titles"
    __table_args__ = (
        UniqueConstraint("member_id", "title_id", name="uq_member_titles_member_id_title_id"),
        Index("ix_member_titles_title_id", "title_id"),
        Index(
            "uq_member_titles_equipped",
            "member_id",
            unique=True,
            postgresql_where=text("equipped"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    member_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("members.id"), nullable=False)
    title_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("titles.id"), nullable=False)
    granted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    equipped: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
