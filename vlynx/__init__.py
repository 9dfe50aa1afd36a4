"""vlynx: extend Video LLMs to new sensory modalities by token-interface alignment."""
from __future__ import annotations

__version__ = "0.1.0"

from vlynx.errors import VlynxError  # noqa: E402

__all__ = ["VLynx", "VlynxError", "__version__"]


def __getattr__(name: str):
    # `VLynx` pulls in torch and transformers: import it only when asked for, so `import vlynx` stays light.
    if name == "VLynx":
        from vlynx.bundle import VLynx

        return VLynx
    raise AttributeError(f"module 'vlynx' has no attribute {name!r}")
