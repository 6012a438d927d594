"""``eval shop``'s refusals: what is missing is named with the command that fixes it."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from streamrank.streams.cli.evaluate import eval_group
from streamrank.streams.shop_demo import shop_table


def test_without_the_data_it_names_the_fetch_command(tmp_path: Path) -> None:
    for mode in (["--offline"], []):  # the streaming half needs the same data first
        result = CliRunner().invoke(eval_group, ["shop", "--data", str(tmp_path), *mode])
        assert result.exit_code != 0
        assert "streamrank data fetch movielens" in result.output


def test_the_table_shows_the_streaming_figure_next_to_the_offline_one() -> None:
    report = {
        "seed": 0,
        "searches": {"test": 100},
        "ndcg@10": {"cascade": 0.5, "personalised": 0.65, "streaming": 0.64},
        "purchases@10": {"cascade": 0.7, "personalised": 1.0, "streaming": 0.98},
        "streaming": {
            "searches": 20,
            "offline_same_searches": {"ndcg@10": 0.66},
            "difference": -0.02,
        },
    }
    table = shop_table(report)
    assert [cell for cell in table.columns[0].cells] == ["cascade", "personalised", "streaming"]
    assert list(table.columns[2].cells) == ["1.00", "1.30", "1.28"]
    assert "offline on the same searches 0.6600 (difference -0.0200)" in str(table.caption)
