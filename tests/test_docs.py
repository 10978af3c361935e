"""The documentation stays true to the repository: links resolve, cited results exist, the results page is
what the JSON gives now, the README stays short, no file reads like a lab notebook, no results go uncited.

No TensorFlow: this reads files only and runs in well under a second.
"""

import glob
import importlib.util
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README_LIMIT = 12_000  # bytes
# Studies being measured: the docs name where their results will land before the folder exists.
PENDING = ("results/starvation_standard", "results/regime_standard")
# A dated lab notebook: the git log is the history, the docs say what is true now. Also a change named by its
# commit ("before 1a2b3c4's change") and a session's scratch folder (runs/ is not in the repository).
NARRATIVE = [r"\bSince stop \d+", r"\bstops? \d+\b", r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", r"one sitting, 20\d\d",
             r"\bSince 20\d\d-\d\d", r"\b(?:until|as of) 20\d\d-\d\d-\d\d", r"\bbefore [0-9a-f]{7,40}'s\b", r"\bruns/s\d+"]
# Every source and prose file is read for narrative; data (results JSON, CSV) is not: its dates are data.
TEXT_FILES = (".py", ".md", ".sh", ".txt", ".cfg", ".ini", ".toml", ".yml", ".yaml")
NOT_THE_REPOSITORY = {".git", ".venv", "runs", "__pycache__", ".pytest_cache", ".ruff_cache", "build", "dist"}
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
CITED = re.compile(r"results/[A-Za-z0-9_.\-/<>*]*")


def _docs():
    """README.md, CONTRIBUTING.md and docs/*.md, relative to the repository."""
    found = ["README.md", "CONTRIBUTING.md"] + sorted(
        os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
    return [p for p in found if os.path.exists(os.path.join(ROOT, p))]


def _study_readmes():
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "results", "**", "README.md"),
                                                              recursive=True))


def _read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8", errors="replace") as f:
        return f.read()


def _text_files():
    """The repository's source and prose files (see TEXT_FILES), relative to it."""
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = sorted(d for d in dirs if d not in NOT_THE_REPOSITORY and not d.endswith(".egg-info"))
        yield from sorted(os.path.relpath(os.path.join(folder, n), ROOT) for n in files if n.endswith(TEXT_FILES))


def _narrative(text):
    return [m.group(0) for pattern in NARRATIVE for m in re.finditer(pattern, text)]


def _results_table():
    spec = importlib.util.spec_from_file_location("results_table", os.path.join(ROOT, "scripts", "results_table.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_pages_exist():
    for page in ("README.md", "CONTRIBUTING.md", "docs/results.md", "docs/method.md", "docs/engine.md",
                 "docs/deploy.md", "docs/benchmarks.md", "docs/troubleshooting.md"):
        assert os.path.exists(os.path.join(ROOT, page)), page


@pytest.mark.parametrize("page", _docs() + _study_readmes())
def test_relative_links_resolve(page):
    folder = os.path.dirname(os.path.join(ROOT, page))
    broken = []
    for target in LINK.findall(_read(page)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a web address or an anchor on the same page
        path = target.split("#")[0]
        if not os.path.exists(os.path.normpath(os.path.join(folder, path))):
            broken.append(target)
    assert not broken, f"{page}: links to missing files {broken}"


def _cited_path(match):
    """A cited `results/...` path up to its first placeholder (`<name>`, `*`), without trailing punctuation."""
    path = re.split(r"[<*]", match)[0]
    if path != match:  # a placeholder: the folder that holds it must exist
        path = path[: path.rfind("/") + 1]
    return path.rstrip(".,;:)")


@pytest.mark.parametrize("page", _docs() + _study_readmes())
def test_cited_results_exist(page):
    missing = []
    for match in CITED.findall(_read(page)):
        path = _cited_path(match)
        if path.rstrip("/").startswith(PENDING):
            continue
        if not os.path.exists(os.path.join(ROOT, path)):
            missing.append(path)
    assert not missing, f"{page} cites results that do not exist: {sorted(set(missing))}"


def test_readme_is_short():
    size = os.path.getsize(os.path.join(ROOT, "README.md"))
    assert size < README_LIMIT, f"README.md is {size} bytes; move detail into docs/ (limit {README_LIMIT})"


def test_results_page_and_readme_table_are_generated_from_the_json():
    tables = _results_table()
    assert _read("docs/results.md") == tables.document(), (
        "docs/results.md is stale: run python scripts/results_table.py --write")
    readme = _read("README.md")
    assert readme == tables.readme_with_headline(readme), (
        "the README's results table is stale: run python scripts/results_table.py --write")


def test_no_file_reads_like_a_lab_notebook():
    """README, docs, study READMEs, CONTRIBUTING, docstrings and comments of every module, test and script."""
    this_file = os.path.relpath(os.path.abspath(__file__), ROOT)  # its examples below are narrative
    found = {path: _narrative(_read(path)) for path in _text_files() if path != this_file}
    found = {path: hits for path, hits in found.items() if hits}
    assert not found, f"these files read like a dated lab notebook: {found}; say what is true now, the git log " \
                      "keeps the history"


def test_every_results_folder_is_cited():
    text = "\n".join(_read(p) for p in _docs())
    folders = sorted(name for name in os.listdir(os.path.join(ROOT, "results"))
                     if os.path.isdir(os.path.join(ROOT, "results", name)))
    orphans = [name for name in folders if not re.search(rf"results/{re.escape(name)}(/|\b)", text)]
    assert not orphans, f"results/ folders no doc cites: {orphans}; cite them in docs/ or delete them"


def test_the_checks_catch_what_they_are_for():
    assert _cited_path("results/bench_<mode>/summary.json") == "results/"
    assert _cited_path("results/seeds_standard/seeds.json.") == "results/seeds_standard/seeds.json"
    assert any(re.search(p, "Since stop 26 (one sitting, 2026-11-24 21:57-23:55)") for p in NARRATIVE)
    assert any(re.search(p, "the default until 2026-11-24") for p in NARRATIVE)  # a label that dates itself
    assert not any(re.search(p, "trained on 2026-11-24 (CPU in the JSON)") for p in NARRATIVE)
    assert _narrative("as before 1a2b3c4's BatchNorm change") and _narrative("see runs/s24/probe.py")
    assert not _narrative("before BiTAT's layer, 29b0136 with 919d9f5's crops")
    files = set(_text_files())  # the narrative check reads the whole repository, data and tools aside
    assert {"README.md", "docs/method.md", "bitat_tf/api.py", "tests/scripts/resume_run.py",
            "results/seeds_standard/README.md"} <= files
    assert not any(f.endswith(".json") or f.startswith((".venv", "runs/", ".git/")) for f in files)
    assert LINK.findall("see [the docs](docs/a.md#x) and ![c](results/c.png)") == ["docs/a.md#x", "results/c.png"]
