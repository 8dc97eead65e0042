"""Optional TensorBoard logging of a run's metrics (``respo train --tensorboard``; imported only
when asked, since it needs the ``tensorboard`` package)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


class TensorBoardSink:
    """Scalars to TensorBoard; needs the ``tensorboard`` package (an optional dependency)."""

    def __init__(self, log_dir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:  # only when asked for: say how to get it
            raise ImportError(
                "TensorBoard logging needs the tensorboard package: pip install tensorboard"
            ) from e
        self.writer = SummaryWriter(str(log_dir))

    def log(self, row: dict[str, Any], step: int) -> None:
        for k, v in row.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
