"""Hub ids on the command line: resolved by ``gozaru.data.hub`` (the data layer reads dataset ids too)."""
from ..data.hub import is_repo_id, resolve

__all__ = ["is_repo_id", "resolve"]
