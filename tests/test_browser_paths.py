"""The suite-wide check that no page shows a server path (``tests/conftest.py``,
``no_server_path_in_the_browser``) sees what a browser would be shown, and only that."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from tests.conftest import REPO, server_paths_shown


def test_the_check_looks_at_every_run_of_a_test_that_uses_apptest():
    assert AppTest._run.__name__ == "run_and_look"


def test_the_check_finds_the_repository_path_wherever_a_page_shows_it(server_paths_allowed):
    script = f"""
import streamlit as st
st.error("cannot read {REPO}/weights/default/card.json")
with st.expander("{REPO}/runs"):
    st.caption("inside")
st.selectbox("Model", ["default", "{REPO}/weights/v4"])
st.text_input("Folder", help="e.g. {REPO}/data/set")
st.dataframe({{"file": ["{REPO}/samples/a.png"]}})
st.markdown("data/my-set and samples/a.png are fine")
"""
    at = AppTest.from_string(script).run()
    assert not at.exception
    shown = "\n".join(server_paths_shown(at))
    for where in ("card.json", "runs", "weights/v4", "data/set", "samples/a.png"):
        assert where in shown, (where, shown)
    assert "are fine" not in shown


def test_what_the_user_typed_is_not_what_the_page_shows(server_paths_allowed):
    at = AppTest.from_string('import streamlit as st\nst.text_input("Folder")').run()
    at.text_input[0].set_value(str(REPO)).run()
    assert server_paths_shown(at) == []


def test_a_test_whose_page_shows_the_repository_path_fails(tmp_path):
    import os
    import subprocess
    import sys

    (tmp_path / "conftest.py").write_text(
        "from tests.conftest import no_server_path_in_the_browser, server_paths_allowed\n"
    )
    leak = f"import streamlit as st; st.warning({str(REPO)!r})"
    clean = "import streamlit as st; st.warning('weights/v4')"
    (tmp_path / "test_leak.py").write_text(
        "from streamlit.testing.v1 import AppTest\n"
        "def test_leak():\n"
        f"    AppTest.from_string({leak!r}).run()\n"
        "def test_clean():\n"
        f"    AppTest.from_string({clean!r}).run()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1, out.stdout + out.stderr
    # both calls pass; test_leak errs at teardown, where the check looks at its pages
    assert "2 passed, 1 error" in out.stdout and "ERROR test_leak.py::test_leak" in out.stdout
    assert f"a page showed a server path to the browser:\nwarning: {REPO}" in out.stdout
