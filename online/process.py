"""What every process of the live loop does first."""

from __future__ import annotations

import os


def own_process_group() -> None:
    """A component runs in a process group of its own, so that stopping it stops what it started
    (the trainer's export process) and leaves nothing holding the job's output open."""
    os.setpgrp()
