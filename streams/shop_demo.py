"""The demo's shop phase: a user searching, their personal ranking, a business rule firing.

:func:`run_shop_phase` runs a small ``eval shop`` (:data:`DEMO_SHOP`): the personalised
LambdaMART model is trained offline, then the users' histories are replayed through a live
worker serving it (:mod:`streamrank.streams.shop_replay`). Before that worker stops, one user's
held-out search is shown as that user got it, then the same search by a user with other
tastes, then again after the business rules (out-of-stock items filtered, promoted ones
boosted) are set and sent over the control topic, with the rules that fired.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.table import Table

from streamrank.models.assets.movielens import MovieLens
from streamrank.models.evaluation.shop import Shop
from streamrank.models.evaluation.shop_eval import Search, ShopEvalConfig
from streamrank.models.scoring.rules import RulesConfig
from streamrank.streams.config import Settings
from streamrank.streams.events import Control, Ranking
from streamrank.streams.shop_replay import LiveShop, replay_shop, search_request
from streamrank.streams.state.rules_store import RulesStore
from streamrank.streams.terminal import progress_bar

DEMO_RULES = RulesConfig(out_of_stock="filter", promoted_boost=1.0, max_boost_positions=3)
"""The rules the demo sets: what a shop would start with."""
SHOWN = 5
DEMO_SHOP = ShopEvalConfig(train_queries=1000, test_queries=300, streaming_searches=30)
"""The demo's evaluation: smaller samples than ``eval shop``'s."""
DEMO_USERS = 200
"""The demo's shop keeps the first users' ratings only (of 943): the replay through a worker
learns about 250 interactions a second on a 2-core machine, and all users' take 13 minutes."""


def first_users(data: MovieLens, count: int) -> MovieLens:
    """``data`` with the ratings of its first ``count`` users (by id) only."""
    users = sorted(data.users, key=lambda user: int(user.user_id))[:count]
    kept = {user.user_id for user in users}
    return MovieLens(data.items, users, [r for r in data.ratings if r.user_id in kept])


@dataclass(frozen=True)
class Showcase:
    """The three rankings the phase shows, with the search they answer."""

    search: Search
    other_user: str
    mine: Ranking
    theirs: Ranking
    ruled: Ranking


def top_genres(shop: Shop, data: MovieLens, user_id: str, count: int = 3) -> list[str]:
    """The genres of a user's training purchases (4-5 stars), most bought first."""
    genres = {item.doc_id: item.genres for item in data.items}
    bought = Counter(
        genre
        for rating in shop.train
        if rating.user_id == user_id and rating.rating >= 4
        for genre in genres[rating.doc_id]
    )
    return [genre for genre, _ in bought.most_common(count)]


def pick(shop: Shop, data: MovieLens, searches: Sequence[Search]) -> tuple[Search, str]:
    """A genre search and a user whose favourite genre differs from the searcher's."""
    kinds = [s for s in searches if s.query.kind == "genre"] or list(searches)
    search = kinds[0]
    mine = top_genres(shop, data, search.query.user_id, 1)
    buyers = Counter(r.user_id for r in shop.train if r.rating >= 4)
    for user, _ in buyers.most_common():
        if user != search.query.user_id and top_genres(shop, data, user, 1) != mine:
            return search, user
    return search, next(u for u in buyers if u != search.query.user_id)


def ask(live: LiveShop, search: Search, user_id: str) -> Ranking:
    """The search asked again by ``user_id`` at the same time; its ranking."""
    request = search_request(search).model_copy(
        update={"request_id": f"demo-{uuid.uuid4().hex[:8]}", "user_id": user_id}
    )
    live.send("candidates", [request], lambda e: e.request_id)
    live.wait_rankings([request.request_id])
    return live.rankings[request.request_id]


def set_rules(live: LiveShop, rules: RulesConfig) -> None:
    """Store the rules and tell the workers, as ``streamrank rules set`` does."""
    stored = RulesStore(live.client, live.settings).save(rules, by="demo")
    control = Control(command_id=uuid.uuid4().hex, action="rules", version=str(stored.version))
    live.send("control", [control], lambda e: e.command_id)


def run_showcase(
    live: LiveShop, data: MovieLens, shop: Shop, searches: Sequence[Search]
) -> Showcase:
    """Ask, ask as another user, set the rules and ask again (until they fired)."""
    search, other = pick(shop, data, searches)
    mine = ask(live, search, search.query.user_id)
    theirs = ask(live, search, other)
    set_rules(live, DEMO_RULES)
    deadline = time.monotonic() + 30
    while True:
        ruled = ask(live, search, search.query.user_id)
        if ruled.rules_fired is not None or time.monotonic() > deadline:
            return Showcase(search, other, mine, theirs, ruled)
        time.sleep(0.5)


def ranking_table(title: str, ranking: Ranking, data: MovieLens, shop: Shop) -> Table:
    movies = {item.doc_id: item for item in data.items}
    table = Table(title=title, title_justify="left")
    for column in ("#", "movie", "genres", "shop"):
        table.add_column(column)
    for item in ranking.items[:SHOWN]:
        movie, product = movies[item.doc_id], shop.catalog[item.doc_id]
        notes = [] if product.stock else ["out of stock"]
        notes += ["promoted"] if product.promoted else []
        table.add_row(str(item.position), movie.title, ", ".join(movie.genres), ", ".join(notes))
    return table


def showcase_view(showcase: Showcase, data: MovieLens, shop: Shop) -> Group:
    """The three rankings as tables, with who asked and what fired."""
    query, user = showcase.search.query, showcase.search.query.user_id
    other = showcase.other_user
    fired = showcase.ruled.rules_fired or {}
    fired_text = "; ".join(f"{rule}: {len(ids)} item(s)" for rule, ids in fired.items())
    return Group(
        ranking_table(
            f"user {user} (buys {', '.join(top_genres(shop, data, user))}) searches {query.text!r}",
            showcase.mine,
            data,
            shop,
        ),
        ranking_table(
            f"the same search by user {other} (buys {', '.join(top_genres(shop, data, other))})",
            showcase.theirs,
            data,
            shop,
        ),
        ranking_table(
            f"user {user} again, after `rules set` (fired: {fired_text or 'none'})",
            showcase.ruled,
            data,
            shop,
        ),
    )


def showcase_record(showcase: Showcase) -> dict[str, Any]:
    """What the phase showed, for the demo's figures file."""
    return {
        "query": showcase.search.query.text,
        "user": showcase.search.query.user_id,
        "other_user": showcase.other_user,
        "mine": [item.doc_id for item in showcase.mine.items[:SHOWN]],
        "theirs": [item.doc_id for item in showcase.theirs.items[:SHOWN]],
        "ruled": [item.doc_id for item in showcase.ruled.items[:SHOWN]],
        "rules_fired": showcase.ruled.rules_fired,
        "model_version": showcase.mine.model_version,
    }


def run_shop_phase(
    settings: Settings, console: Console, config: ShopEvalConfig = DEMO_SHOP
) -> dict[str, Any]:
    """The shop phase: train, replay, show; returns the figures (``.run/demo-shop.json``).

    Fetches MovieLens the first time. The personalised model is trained offline on a sample of
    the training searches, served by a live worker after the users' histories are replayed
    through it, and compared on the held-out searches of :data:`DEMO_SHOP`.
    """
    from streamrank.models.assets.movielens import DEFAULT_OUT, fetch_movielens, load_movielens
    from streamrank.models.evaluation.shop import build_shop
    from streamrank.models.evaluation.shop_eval import run_shop_eval
    from streamrank.models.scoring.bi_encoder import load_bi_encoder

    if not (DEFAULT_OUT / "items.jsonl").exists():
        console.print("fetching MovieLens 100K (once)")
        fetch_movielens(DEFAULT_OUT, log=console.print)
    data = first_users(load_movielens(DEFAULT_OUT), DEMO_USERS)
    shop = build_shop(data, config.seed)
    encoder = load_bi_encoder(settings.model_dir)
    shown: list[Showcase] = []

    def streaming(tests: list[Search], ranker: Any, features: Any) -> dict[str, Any]:
        with progress_bar(console) as bars:
            task = bars.add_task("replaying the users' histories", total=None)

            def progress(what: str, done: int, total: int) -> None:
                bars.update(task, completed=done, total=total)

            figures, showcase = replay_shop(
                settings,
                data,
                shop,
                tests,
                ranker,
                features,
                Path(".run"),
                progress,
                after=lambda live: run_showcase(live, data, shop, tests),
            )
        shown.append(showcase)
        return figures

    console.print(
        f"the shop: {len(data.items):,} movies, {len(data.users):,} users, "
        f"{len(data.ratings):,} ratings; training the final ranker on searches (point in time)"
    )
    report = run_shop_eval(
        data,
        shop,
        encoder,
        config,
        settings.model_dir / "shop",
        log=console.print,
        streaming=streaming,
    )
    console.print(shop_table(report))
    console.print(showcase_view(shown[0], data, shop))
    record = report | {"showcase": showcase_record(shown[0])}
    path = Path(".run") / "demo-shop.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    console.print(f"figures: {path}")
    return record


def shop_table(report: dict[str, Any]) -> Table:
    """nDCG@10 and purchases@10 per method, each with its ratio to the cascade, and the
    streaming figure next to the offline one on the same searches (`eval shop`, the demo)."""
    table = Table(title=f"shop (seed {report['seed']}): {report['searches']['test']:,} searches")
    for column in ("method", "nDCG@10", "x cascade", "purchases@10"):
        table.add_column(column, justify="left" if column == "method" else "right")
    base = report["ndcg@10"]["cascade"] or float("nan")
    for method, ndcg in report["ndcg@10"].items():
        bought = report["purchases@10"][method]
        table.add_row(method, f"{ndcg:.4f}", f"{ndcg / base:.2f}", f"{bought:.3f}")
    streamed = report.get("streaming")
    if streamed:
        offline = streamed["offline_same_searches"]["ndcg@10"]
        table.caption = (
            f"streaming: {streamed['searches']} searches through a live worker; offline on the "
            f"same searches {offline:.4f} (difference {streamed['difference']:+.4f})"
        )
    return table
