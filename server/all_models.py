"""Imports every domain's models so that ``Base.metadata`` is complete (Alembic, tests)."""

from members import models as member_models  # noqa: F401
from server import models as server_models  # noqa: F401
from server.db import Base

try:  # the ledger lands in its own package
    from ledger import models as ledger_models  # noqa: F401
except ImportError:  # pragma: no cover
    pass

metadata = Base.metadata
