"""Objects built from config nodes. Every settings class is a `_target_` node whose keys are its
fields (lightning-hydra-template's shape) and checks its values where it is built; `build` is
Hydra's `instantiate` with that check's own error in front, not wrapped in Hydra's."""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate


def build(node: Any, **kwargs: Any) -> Any:
    """`instantiate(node, **kwargs)`; a ValueError or TypeError of the target (a bad value, a missing
    or unknown key) is raised as it is."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, (ValueError, TypeError)):
            raise cause from None
        raise
