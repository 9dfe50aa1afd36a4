"""Token-interface diagnostics (`vlynx diagnose`, docs/diagnostics.md).

Does a new modality land in the token interface, the region of the LLM's input space the
video tokens occupy? One module each:

- `geometry`: cosine distances, mean-embedding norms and the modality gap of token groups,
  exact from streamed sums (paper Table B1);
- `gap`: a modality's interface gap before and after its adapter: eq. 6 per layer, eq. 8,
  an MMD, and the geometry against the vocabulary and the video tokens;
- `attention`: the LLM's attention from a question to each stream's tokens (Figure 4);
- `plots`: the pictures; `monitor`: the gap logged during `vlynx align`;
- `run`: `run_diagnose(config)`, the command as `vlynx diagnose` runs it.
"""
from __future__ import annotations

from vlynx.diagnose.config import DiagnoseConfig

__all__ = ["DiagnoseConfig", "run_diagnose"]


def run_diagnose(config: DiagnoseConfig):
    """See `vlynx.diagnose.run.run_diagnose` (imported on use: torch stays out of `vlynx --help`)."""
    from vlynx.diagnose.run import run_diagnose as run

    return run(config)
