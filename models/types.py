"""What the cascade ranks: a document id, its text (maybe missing) and its first-stage score.

Any object with these three attributes will do (:class:`CandidateLike`): the streaming side
hands the cascade its wire-contract candidates as they are, without copying them.

Examples
--------
>>> TextCandidate("d1", "Fleas are insects.", 12.5).has_text
True
>>> TextCandidate("d2", "   ", 3.0).has_text
False
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class CandidateLike(Protocol):
    """The attributes the cascade reads from a candidate."""

    @property
    def doc_id(self) -> str: ...

    @property
    def text(self) -> str | None: ...

    @property
    def first_stage_score(self) -> float: ...


@dataclass(frozen=True)
class TextCandidate:
    """A first-stage hit with the text the cascade's scorers read."""

    doc_id: str
    text: str | None
    first_stage_score: float = 0.0

    @property
    def has_text(self) -> bool:
        """Whether there is any text to score."""
        return has_text(self)


def has_text(candidate: CandidateLike) -> bool:
    """Whether a candidate has non-blank text."""
    return bool(candidate.text and candidate.text.strip())
