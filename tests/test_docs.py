"""The docs keep their shape: README.md stays a landing page (at most 250 lines and 15 KB), every
relative link in README.md and docs/*.md points at a file that exists (and, into a Markdown file,
at a heading it has), and bench/results/README.md is exactly what bench/results_index.py writes
from the JSON files beside it. Stdlib only: runs in any install."""
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 250
README_MAX_BYTES = 15_000
# Pages another branch writes; a link to one is accepted while it is absent and checked once it lands.
PENDING: set[str] = set()  # pages promised but not written yet

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def results_index():
    spec = importlib.util.spec_from_file_location("results_index", ROOT / "bench" / "results_index.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation other than - and _ dropped, spaces to -."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    return {anchor(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.*)$", text, re.M)}


def relative_links(path: Path) -> list[str]:
    return [t for t in LINK.findall(FENCE.sub("", path.read_text()))
            if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]  # http:, https:, mailto: ...


def test_the_readme_is_a_landing_page():
    text = README.read_text()
    assert len(text.splitlines()) <= README_MAX_LINES, f"README.md has {len(text.splitlines())} lines"
    assert len(text.encode()) <= README_MAX_BYTES, f"README.md has {len(text.encode()):,} bytes"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_an_existing_file(page):
    broken = []
    for target in relative_links(page):
        file, _, fragment = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        name = dest.relative_to(ROOT).as_posix() if dest.is_relative_to(ROOT) else str(dest)
        if not dest.exists():
            if name not in PENDING:
                broken.append(f"{target}: no such file")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target}: {name} has no heading #{fragment}")
    assert broken == []


def test_the_link_check_sees_links_and_anchors(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A title, with `code`\n[a](other.md#x) [b](https://example.org) ![c](img.png)\n"
                    "```\n[not a link](nowhere.md)\n```\n")
    assert relative_links(page) == ["other.md#x", "img.png"]
    assert anchors(page) == {"a-title-with-code"}


def test_results_index_is_up_to_date():
    index = results_index()
    committed = (ROOT / "bench" / "results" / "README.md").read_text()
    assert committed == index.render(), "bench/results/README.md is stale: run python bench/results_index.py"


def test_every_results_file_is_described():
    index = results_index()
    files = sorted((ROOT / "bench" / "results").glob("*.json"))
    assert files
    undescribed = [p.name for p in files if index.about(p.name)[0] == "not recorded"]
    assert undescribed == [], "add a line for these files to ABOUT in bench/results_index.py"


def test_the_gpu_check_gets_a_summary(tmp_path):
    """The GPU check's results file (bench/gpu_check.py) is summarized section by section."""
    index = results_index()
    report = {"environment": {"gpu": "NVIDIA H200", "onnxruntime": "onnxruntime-gpu 1.22.0", "python": "3.11.7"},
              "quick": False, "cpu_stand_in": False, "exit_status": 0, "seconds": 301.5,
              "sections": {"conformance": {"ok": True, "rows": 12, "section_seconds": 40.2},
                           "step": {"failed": "RuntimeError: boom", "trace": "...", "section_seconds": 1.0}}}
    lines = index.summarize("gpu_check_h200.json", report)
    assert lines[0].startswith("GPU: NVIDIA H200; onnxruntime-gpu 1.22.0")
    assert "| conformance | ok | 40.2 | rows 12 |" in lines
    assert "| step | failed | 1 | RuntimeError: boom |" in lines


def test_the_readme_gpu_table_is_generated_from_the_committed_results():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(root / "bench" / "gpu_table.py"), "--check"])
    assert done.returncode == 0, "README.md's GPU table differs from bench/gpu_table.py's output: run it"
