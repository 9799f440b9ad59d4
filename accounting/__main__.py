"""``python -m accounting``: the accounting process, the same as ``aigw accounting``."""

import asyncio
import logging
import os

from accounting.app import run_accounting
from accounting.settings import AccountingSettings

logging.basicConfig(
    level=os.environ.get("AIGW_LOG_LEVEL", "INFO").upper(),
    format="%(asctime)s %(levelname)s %(name)s %(message)s",
)
asyncio.run(run_accounting(AccountingSettings()))
