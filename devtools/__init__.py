"""Developer tooling shared by the tests and the benchmarks (not part of the library or the app).

``devtools.browser`` starts ``streamlit run app.py`` and drives it in Debian's Chromium with
Playwright.
"""
