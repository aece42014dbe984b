"""Imports every domain's models so that ``Base.metadata`` is complete (Alembic, tests).
A new domain adds its ``models`` module here."""

from badges import models as badge_models  # noqa: F401
from campaigns import models as campaign_models  # noqa: F401
from leaderboards import models as leaderboard_models  # noqa: F401
from ledger import models as ledger_models  # noqa: F401
from members import models as member_models  # noqa: F401
from quests import models as quest_models  # noqa: F401
from redemptions import models as redemption_models  # noqa: F401
from referrals import models as referral_models  # noqa: F401
from server import models as server_models  # noqa: F401
from server.db import Base
from webhooks import models as webhook_models  # noqa: F401

metadata = Base.metadata
