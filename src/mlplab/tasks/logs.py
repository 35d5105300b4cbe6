"""Logging filters for Hydra's job logging config (conf/hydra/default.yaml).

Hydra configures logging before a task runs, in every task, so this module imports nothing heavy.
"""

from __future__ import annotations

import logging


class DropAdverts(logging.Filter):
    """Drop Lightning's "💡 Tip: ... try installing ..." lines, which advertise other packages.

    Attached to the ``pytorch_lightning.utilities.rank_zero`` logger, where Lightning logs them
    once per Trainer; every other line of that logger (devices, "`Trainer.fit` stopped") passes.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")
