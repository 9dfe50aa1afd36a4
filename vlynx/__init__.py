"""vlynx: extend Video LLMs to new sensory modalities by token-interface alignment."""
from __future__ import annotations

__version__ = "0.1.0"

from vlynx.errors import VlynxError  # noqa: E402

__all__ = ["VlynxError", "__version__"]
