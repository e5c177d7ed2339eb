"""The Streamlit app renders without exceptions (AppTest, no browser)."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from tests.conftest import REPO


def test_home_page_renders():
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=30).run()
    assert not at.exception
    assert "Nuclei segmentation" in at.title[0].value
