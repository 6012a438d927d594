"""Simulated users: which of the shown results they click, given the results' true grades.

These are the click models of the standard online learning-to-rank simulations (Hofmann et al.
2013; Oosterhuis and de Rijke 2018), for graded relevance 0-3 as in TREC DL:

- ``navigational``, ``informational`` and ``perfect`` are cascade models: the user scans from
  the top, clicks a result with P(click | grade), and after a click stops with P(stop | grade).
- ``pbm`` is the position-based model: rank r is examined with probability (1/r)^eta, and an
  examined result is clicked with the ``informational`` click probabilities.

Examples
--------
>>> import numpy as np
>>> model = click_model("perfect")
>>> model.clicks([3, 0, 3, 1], np.random.default_rng(7))
[0, 2]
>>> click_model("pbm").examination_probability(4)
0.25
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CascadeClickModel:
    """Scan top-down; click with P(click | grade); after a click stop with P(stop | grade)."""

    name: str
    click_probability: tuple[float, float, float, float]
    stop_probability: tuple[float, float, float, float]

    def clicks(self, grades: Sequence[int], rng: np.random.Generator) -> list[int]:
        """0-based positions clicked in a list whose results have these grades."""
        clicked = []
        for position, grade in enumerate(grades):
            grade = min(max(int(grade), 0), 3)
            if rng.random() < self.click_probability[grade]:
                clicked.append(position)
                if rng.random() < self.stop_probability[grade]:
                    break
        return clicked


@dataclass(frozen=True)
class PositionBasedClickModel:
    """Rank r is examined with probability (1/r)^eta; examined results click by grade."""

    name: str
    click_probability: tuple[float, float, float, float]
    eta: float = 1.0

    def examination_probability(self, rank: int) -> float:
        """P(examined) at a 1-based rank."""
        return (1.0 / rank) ** self.eta

    def clicks(self, grades: Sequence[int], rng: np.random.Generator) -> list[int]:
        clicked = []
        for position, grade in enumerate(grades):
            grade = min(max(int(grade), 0), 3)
            examined = rng.random() < self.examination_probability(position + 1)
            if examined and rng.random() < self.click_probability[grade]:
                clicked.append(position)
        return clicked


ClickModel = CascadeClickModel | PositionBasedClickModel

INFORMATIONAL_CLICKS = (0.4, 0.6, 0.8, 0.9)
CLICK_MODELS: dict[str, ClickModel] = {
    "navigational": CascadeClickModel("navigational", (0.05, 0.3, 0.7, 0.95), (0.2, 0.3, 0.7, 0.9)),
    "informational": CascadeClickModel("informational", INFORMATIONAL_CLICKS, (0.1, 0.2, 0.4, 0.5)),
    "perfect": CascadeClickModel("perfect", (0.0, 0.2, 0.6, 1.0), (0.0, 0.0, 0.0, 0.0)),
    "pbm": PositionBasedClickModel("pbm", INFORMATIONAL_CLICKS, eta=1.0),
}


def click_model(name: str, eta: float | None = None) -> ClickModel:
    """A click model by name; ``eta`` overrides the position-based model's exponent."""
    if name not in CLICK_MODELS:
        raise ValueError(f"unknown click model {name!r}; choose one of {sorted(CLICK_MODELS)}")
    model = CLICK_MODELS[name]
    if eta is not None:
        if not isinstance(model, PositionBasedClickModel):
            raise ValueError("eta applies only to the position-based model 'pbm'")
        model = PositionBasedClickModel(model.name, model.click_probability, eta)
    return model
