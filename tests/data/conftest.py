"""The data tier: tests on real assets that live outside the checkout, each slow.

Two kinds of asset: the judged collections in ``../shared/data`` beside the checkout, and
the real models that ``streamrank models fetch`` puts in the model directory. A module that
reads the collections asks for :func:`shared_data` (``pytest.mark.usefixtures``), so without
that folder its tests skip with one message that names it; the model tests skip on their own
when the models are not fetched.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import SHARED_DATA


@pytest.fixture
def shared_data() -> Path:
    """The shared judged collections, or a skip that says where they were looked for."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the shared judged collections are not at {SHARED_DATA} (../shared/data)")
    return SHARED_DATA
