"""Merchandising rules applied to a scored list after the final ranker.

The model orders the candidates; the business then has its say: out-of-stock items filtered or
buried, promoted items given a bounded boost, pinned items per query, a bury list, and at most
N items sharing a brand (or category, or any item field) in the top. :func:`apply_rules` takes
the model's scores and a :class:`RulesConfig` and returns a :class:`RuledList`: the final
order, the pre-rule scores untouched (the learner trains on those, so it never learns its own
boosts) and which rules fired on which items.

Order of application, and why
-----------------------------
1. **Stock** (``out_of_stock``). ``filter`` removes out-of-stock items; ``bury`` puts them
   below every in-stock item. It comes first because no later rule may show an item that
   cannot be sold: the boost, the bury list and diversity all work inside the in-stock and the
   out-of-stock band, never across them.
2. **Promoted boost**. A promoted item's score gets ``promoted_boost`` added and the band is
   re-ordered, but the item rises at most ``max_boost_positions`` places over the order the
   band had (the bound), and no other item rises. It runs on model scores, before rules that
   move items by position, so the boost means the same whatever the other rules do.
3. **Bury list**. Listed items go to the end of their stock band, model order kept: below
   every other in-stock item, above the out-of-stock ones. A buried item is not boosted and
   not pulled up by diversity: the operator's "do not show" outranks both.
4. **Diversity**. Walking the list, an item whose field value already has ``max_per_value``
   items in the top ``top`` is deferred to just below the top; the next items fill its place.
   It runs after the moves above so that it caps the top that will be shown. An item without
   the field is never capped. Deferred items never cross a band (in stock, buried, out of
   stock, buried out of stock): if a band runs out before the top is full, its deferred items
   close it, and the cap gives way to the bands.
5. **Pins**, last, so a pin always wins: the pinned items present take positions 1..n in the
   order configured (a pin that is not among the candidates leaves no hole). A pinned
   out-of-stock item is shown under ``bury`` but not under ``filter``: a filtered item is gone.
   Pinned items are set aside before the boost, so they move nobody's bound, and diversity
   counts them in its top, so the cap holds with the pins in place.

A rule *fires* on an item when it applies to it, whether or not the item ends up moved:
``out_of_stock`` on every out-of-stock item when the rule is on, ``promoted_boost`` on every
promoted item it re-ordered, ``bury`` on every listed item present, ``diversity`` on every
item it deferred, ``pin`` on every pinned item shown. A pinned item records only ``pin`` (the
pin decided its place), except that a filtered one records only ``out_of_stock``.

Missing fields: an item without the stock field (or with ``None``) counts as in stock, one
without the promoted field as not promoted, one without the diversity field is never capped.
Field values are read for their truth: ``False`` or a stock count of ``0`` is out of stock.

Examples
--------
>>> config = load_rules(
...     {"out_of_stock": "filter", "diversity": {"field": "brand", "max_per_value": 1, "top": 2}},
...     known_fields={"in_stock", "promoted", "brand"},
... )
>>> items = [
...     RuleItem("a", 3.0, {"brand": "x"}),
...     RuleItem("b", 2.0, {"brand": "x"}),
...     RuleItem("c", 1.0, {"brand": "y", "in_stock": False}),
...     RuleItem("d", 0.5, {"brand": "y"}),
... ]
>>> ruled = apply_rules("Shoes", items, config)
>>> ruled.doc_ids
('a', 'd', 'b')
>>> ruled.fired
{'out_of_stock': ('c',), 'diversity': ('b',)}
>>> ruled.scores["c"]
1.0
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain, compress
from operator import attrgetter
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from streamrank.models.scoring.score_cache import normalize_query

RULE_NAMES = ("out_of_stock", "promoted_boost", "bury", "diversity", "pin")
"""The names :attr:`RuledList.fired` uses, in the order the rules apply."""


class RulesError(ValueError):
    """A rules config that cannot run, or items the rules cannot order; the message says why."""


class DiversityRule(BaseModel):
    """At most ``max_per_value`` items sharing a value of ``field`` in the top ``top``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str = Field(min_length=1, description="the item field whose values are capped")
    max_per_value: int = Field(ge=1, description="items per value allowed in the top")
    top: int = Field(10, ge=1, description="how many first positions the cap covers")


class RulesConfig(BaseModel):
    """The merchandising rules, as operators write them (JSON or TOML tables).

    Parameters
    ----------
    out_of_stock
        ``bury`` (below every in-stock item, order kept), ``filter`` (removed) or ``off``.
    stock_field
        The item field that says whether it is in stock (a flag or a count).
    promoted_field
        The item field that flags a promoted item.
    promoted_boost
        Added to a promoted item's model score; 0 turns the boost off.
    max_boost_positions
        The most places the boost may lift a promoted item; required with a boost.
    pins
        Query -> doc ids shown first, in that order. Queries are normalised (case, spaces,
        Unicode forms), so ``"Running Shoes "`` and ``"running shoes"`` are one pin.
    bury
        Doc ids always moved to the end of their band.
    diversity
        A cap per field value in the top, or none.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    out_of_stock: Literal["filter", "bury", "off"] = "bury"
    stock_field: str = Field("in_stock", min_length=1)
    promoted_field: str = Field("promoted", min_length=1)
    promoted_boost: float = Field(0.0, ge=0.0, allow_inf_nan=False)
    max_boost_positions: int = Field(0, ge=0)
    pins: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    bury: frozenset[str] = frozenset()
    diversity: DiversityRule | None = None

    @field_validator("pins")
    @classmethod
    def _normalise_pins(cls, pins: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        normalised: dict[str, tuple[str, ...]] = {}
        originals: dict[str, str] = {}
        for query, doc_ids in pins.items():
            key = normalize_query(query)
            if not key:
                raise ValueError(f"pin query {query!r} is empty once normalised")
            if key in normalised:
                raise ValueError(
                    f"pin queries {originals[key]!r} and {query!r} are the same query once "
                    "normalised (case, spaces); merge their doc ids under one"
                )
            if len(set(doc_ids)) != len(doc_ids):
                raise ValueError(f"pin query {query!r} lists a doc id twice: {list(doc_ids)}")
            normalised[key], originals[key] = doc_ids, query
        return normalised

    @model_validator(mode="after")
    def _bounded_boost(self) -> RulesConfig:
        if self.promoted_boost > 0 and self.max_boost_positions == 0:
            raise ValueError(
                "promoted_boost is set but max_boost_positions is 0, so the boost could move "
                "nothing; set max_boost_positions (the most places a promoted item may rise)"
            )
        return self

    def fields_used(self) -> dict[str, str]:
        """Setting -> item field, for every field an active rule reads."""
        used = {}
        if self.out_of_stock != "off":
            used["stock_field"] = self.stock_field
        if self.promoted_boost > 0:
            used["promoted_field"] = self.promoted_field
        if self.diversity is not None:
            used["diversity.field"] = self.diversity.field
        return used


def load_rules(raw: Mapping[str, Any] | str | bytes, known_fields: Collection[str]) -> RulesConfig:
    """A :class:`RulesConfig` from a dict (parsed JSON or TOML) or JSON text, checked.

    Parameters
    ----------
    raw
        The config: a mapping, or JSON text.
    known_fields
        The item fields the candidates carry; every field an active rule reads must be one.

    Raises
    ------
    RulesError
        On bad JSON, an unknown setting, a wrong type or a negative number, or a rule that
        reads a field the items do not have; the message names the setting and the fix.

    Examples
    --------
    >>> config = load_rules(
    ...     '{"promoted_boost": 0.5, "max_boost_positions": 3, "pins": {" Red  Shoes": ["d1"]}}',
    ...     known_fields={"in_stock", "promoted"},
    ... )
    >>> config.out_of_stock, config.promoted_boost, config.pins
    ('bury', 0.5, {'red shoes': ('d1',)})
    >>> load_rules({"diversity": {"field": "colour", "max_per_value": 2}}, {"brand", "in_stock"})
    Traceback (most recent call last):
    ...
    streamrank.models.scoring.rules.RulesError: rules: diversity.field reads item field 'colour', which the items do not carry (known fields: brand, in_stock); use one of those, or send 'colour' with every item first
    """  # noqa: E501
    if isinstance(raw, str | bytes):
        try:
            raw = json.loads(raw)
        except ValueError as error:
            raise RulesError(f"rules: not valid JSON ({error})") from None
    if not isinstance(raw, Mapping):
        raise RulesError(f"rules: expected a table of settings, got {type(raw).__name__}")
    try:
        config = RulesConfig.model_validate(dict(raw))
    except ValidationError as error:
        raise RulesError(_describe(error)) from None
    known = set(known_fields)
    for setting, name in config.fields_used().items():
        if name not in known:
            raise RulesError(
                f"rules: {setting} reads item field {name!r}, which the items do not carry "
                f"(known fields: {', '.join(sorted(known)) or 'none'}); use one of those, or "
                f"send {name!r} with every item first"
            )
    return config


def reload_rules(
    running: RulesConfig, raw: Mapping[str, Any] | str | bytes, known_fields: Collection[str]
) -> tuple[RulesConfig, RulesError | None]:
    """The new config if it loads, else the running one and the error (hot reload).

    Examples
    --------
    >>> running = RulesConfig()
    >>> config, error = reload_rules(running, {"bury": ["d9"], "colour": 1}, {"in_stock"})
    >>> config is running, str(error)
    (True, 'rules: colour: unknown setting; settings: out_of_stock, stock_field, promoted_field, promoted_boost, max_boost_positions, pins, bury, diversity')
    """  # noqa: E501
    try:
        return load_rules(raw, known_fields), None
    except RulesError as error:
        return running, error


def _describe(error: ValidationError) -> str:
    """One line per problem, each naming its setting."""
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "config"
        if item["type"] == "extra_forbidden":
            model = DiversityRule if where.startswith("diversity.") else RulesConfig
            problems.append(f"{where}: unknown setting; settings: {', '.join(model.model_fields)}")
        else:
            message = item["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {message} (got {item['input']!r})")
    return "rules: " + "; ".join(problems)


@dataclass(frozen=True, slots=True)
class RuleItem:
    """One scored candidate: its id, the model's (pre-rule) score and its item fields."""

    doc_id: str
    score: float
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RuledList:
    """The outcome of :func:`apply_rules`.

    Attributes
    ----------
    doc_ids
        The final order; ``doc_ids[i]`` is shown at position ``i + 1``.
    pre_rule_order
        The model's order of every input item, filtered ones included (score descending,
        ties in input order).
    pre_rule_scores
        Their model scores, untouched, in that order: what the learner trains on.
    fired
        Rule name -> the doc ids it fired on, in the order the rule met them; rules that
        fired on nothing are absent.
    """

    doc_ids: tuple[str, ...]
    pre_rule_order: tuple[str, ...]
    pre_rule_scores: tuple[float, ...]
    fired: Mapping[str, tuple[str, ...]]

    @property
    def scores(self) -> dict[str, float]:
        """Doc id -> model score, of every input item (built on each call)."""
        return dict(zip(self.pre_rule_order, self.pre_rule_scores, strict=True))

    def positions(self) -> dict[str, int]:
        """Doc id -> final position, from 1; filtered items are absent."""
        return {doc_id: i for i, doc_id in enumerate(self.doc_ids, 1)}


_DOC_ID = attrgetter("doc_id")
_SCORE = attrgetter("score")


def _key(item: RuleItem) -> float:
    # NaN last: a broken score must not crash a ranking nor float to the top.
    score = item.score
    return -math.inf if score != score else score


def apply_rules(query: str, items: Sequence[RuleItem], config: RulesConfig) -> RuledList:
    """Order ``items`` by their scores, then apply ``config``'s rules (module docstring).

    Parameters
    ----------
    query
        The request's query; pins match it once normalised.
    items
        The final ranker's candidates, in any order.
    config
        The rules.

    Raises
    ------
    RulesError
        When two items share a doc id (the final order would be ambiguous).
    """
    # Stable sorts: ties keep their input order. The key in C; a NaN score (the sum is then NaN
    # too) needs the Python key, which ranks it last.
    order = sorted(items, key=_SCORE, reverse=True)
    scores = tuple(map(_SCORE, order))
    if (total := sum(scores)) != total:
        order = sorted(items, key=_key, reverse=True)
        scores = tuple(map(_SCORE, order))
    ids = list(map(_DOC_ID, order))
    position = dict(zip(ids, range(len(ids)), strict=True))
    if len(position) != len(ids):
        raise RulesError("apply_rules: two candidates share a doc id; deduplicate them first")
    pin_ids = config.pins.get(normalize_query(query), ()) if config.pins else ()
    fired: dict[str, list[str]] = {name: [] for name in RULE_NAMES}
    in_stock, in_buried, out_stock, out_buried, pins = _bands(
        order, position, config, pin_ids, fired
    )
    if config.promoted_boost > 0:
        in_stock = _boost(in_stock, config, fired["promoted_boost"])
        out_stock = _boost(out_stock, config, fired["promoted_boost"])
    bands = (in_stock, in_buried, out_stock, out_buried)
    if config.diversity is not None:
        rest = _diversify(bands, config.diversity, pins, fired["diversity"])
    else:
        rest = [item for band in bands for item in band]
    fired["pin"] = list(map(_DOC_ID, pins))
    return RuledList(
        doc_ids=tuple(map(_DOC_ID, chain(pins, rest))),
        pre_rule_order=tuple(ids),
        pre_rule_scores=scores,
        fired={name: tuple(doc_ids) for name, doc_ids in fired.items() if doc_ids},
    )


def _bands(
    order: list[RuleItem],
    position: dict[str, int],
    config: RulesConfig,
    pin_ids: Sequence[str],
    fired: dict[str, list[str]],
) -> tuple[list[RuleItem], list[RuleItem], list[RuleItem], list[RuleItem], list[RuleItem]]:
    """Split the model's order into in-stock, buried in-stock, out-of-stock and buried
    out-of-stock items (model order kept in each) and the pinned items shown (pin order);
    filtered items are dropped.

    Items are found by position: beyond one pass to read the stock field and one to copy the
    in-stock band (``compress``, in C), only the few special items cost Python bytecode.
    """
    mode, bury = config.out_of_stock, config.bury
    if mode == "off" and not bury and not pin_ids:
        return order, [], [], [], []  # the list as the model ordered it
    out_of_stock: set[int] = set()
    if mode != "off":
        name = config.stock_field
        out_of_stock = {
            p
            for p, item in enumerate(order)
            # missing or None: in stock; False or 0: out of stock
            if not (value := item.fields.get(name)) and value is not None
        }
    filtered = out_of_stock if mode == "filter" else set()
    pin_at = [position[d] for d in pin_ids if d in position and position[d] not in filtered]
    pinned = set(pin_at)
    if len(bury) < len(position):
        buried = {position[d] for d in bury if d in position}
    else:
        buried = {p for doc_id, p in position.items() if doc_id in bury}
    buried -= filtered | pinned
    fired["out_of_stock"] = [order[p].doc_id for p in sorted((out_of_stock - pinned) | filtered)]
    fired["bury"] = [order[p].doc_id for p in sorted(buried)]
    special = out_of_stock | buried | pinned
    if not special:
        return order, [], [], [], []
    keep = [True] * len(order)
    for p in special:
        keep[p] = False
    sink = out_of_stock - filtered - pinned
    return (
        list(compress(order, keep)),
        [order[p] for p in sorted(buried - out_of_stock)],
        [order[p] for p in sorted(sink - buried)],
        [order[p] for p in sorted(sink & buried)],
        [order[p] for p in pin_at],
    )


def _boost(band: list[RuleItem], config: RulesConfig, fired: list[str]) -> list[RuleItem]:
    """The band re-ordered by boosted scores, each promoted item lifted at most the bound.

    Promoted items share one boost, so among themselves they keep the model's order, as do the
    others. Top to bottom, each promoted item rises past the others just above it that its
    boosted score beats (a tie keeps the model's order), at most ``bound`` of them and never
    past the promoted item before it. Lifting an item leaves the ones below it in place, so
    each is found at its model position; only the ``bound`` items above it are compared.
    """
    name = config.promoted_field
    flags = [item.fields.get(name) for item in band]
    if not any(flags):
        return band
    boost, bound = config.promoted_boost, config.max_boost_positions
    out = band.copy()
    reach = 0  # the highest place the next promoted item may take: below the last one
    for p in compress(range(len(band)), flags):
        item = band[p]
        boosted = item.score + boost
        k = p
        if boosted > -math.inf:  # a NaN or -inf promoted item beats nothing
            floor = p - bound if p - bound > reach else reach
            # (NaN scores rank last: none is above an item with a finite score)
            while k > floor and out[k - 1].score < boosted:
                k -= 1
            if k < p:
                out[k + 1 : p + 1] = out[k:p]
                out[k] = item
        reach = k + 1
        fired.append(item.doc_id)
    return out


def _diversify(
    bands: tuple[list[RuleItem], ...],
    rule: DiversityRule,
    pins: list[RuleItem],
    fired: list[str],
) -> list[RuleItem]:
    """The bands concatenated, items over the cap deferred to just below the top."""
    name, cap = rule.field, rule.max_per_value
    limit = rule.top - len(pins)  # pins take the first places of the top
    counts: dict[Any, int] = {}
    for item in pins:
        value = _hashable(item.fields.get(name))
        if value is not None:
            counts[value] = counts.get(value, 0) + 1
    out: list[RuleItem] = []
    for band in bands:
        deferred: list[RuleItem] = []
        for i, item in enumerate(band):
            if len(out) >= limit:
                out += deferred
                out += band[i:]
                deferred = []
                break
            value = _hashable(item.fields.get(name))
            if value is not None:
                seen = counts.get(value, 0)
                if seen >= cap:
                    deferred.append(item)
                    fired.append(item.doc_id)
                    continue
                counts[value] = seen + 1
            out.append(item)
        out += deferred  # the band ran out before the top filled: they close it
    return out


def _hashable(value: Any) -> Any:
    # JSON field values may be lists or objects; their text stands for them.
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value
