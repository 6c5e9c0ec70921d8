"""docs/theory.md and the code must not drift apart.

* every ``sslkit.<module>.<name>`` the page names must import (module) and exist (attribute);
* every section the repository cites as docs/theory.md followed by a section number must exist;
* no file may cite the theory page by any other path (a clone has only docs/theory.md).
"""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
THEORY = REPO / "docs/theory.md"

# where references to the page can occur (results/, .venv/ and the like are not scanned)
SCAN_DIRS = ("sslkit", "tests", "config", "rules", "workflow_scripts", "report", "bench", "docs", "envs",
             "profiles", ".ci")
SCAN_FILES = ("README.md", "Snakefile", "Makefile", "pyproject.toml")
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".smk", ".txt", ".toml", ".cfg", ".tex", ".sh", ""}

DOTTED = re.compile(r"\bsslkit(?:\.[A-Za-z_]\w*)+")
GOOD_PATH = re.compile(r"(?<![\w./-])docs/theory\.md")
# "docs/theory.md §2", "``docs/theory.md`` §6, §7", "docs/theory.md §1-§5", "... §2 and §3": group 1 holds the sections
CITATION = re.compile(r"docs/theory\.md`*((?:(?:\s*[,-]\s*|\s+and\s+|\s+)§\d+)+)")
SECTION_HEADING = re.compile(r"^## §(\d+) ", re.MULTILINE)


def _text_files() -> list[Path]:
    files = [REPO / f for f in SCAN_FILES if (REPO / f).is_file()]
    for d in SCAN_DIRS:
        root = REPO / d
        if root.is_dir():
            files += [p for p in sorted(root.rglob("*")) if p.is_file() and p.suffix in SUFFIXES
                      and "__pycache__" not in p.parts]
    return files


def _read(p: Path) -> str:
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return ""


def _sections() -> set[int]:
    return {int(n) for n in SECTION_HEADING.findall(THEORY.read_text(encoding="utf-8"))}


def resolve(dotted: str) -> object:
    """The object a dotted ``sslkit...`` name refers to: the longest importable module prefix, then
    attributes. Raises ImportError / AttributeError when the name does not exist."""
    parts = dotted.split(".")
    for k in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:k]))
        except ModuleNotFoundError as err:
            if err.name is not None and not ".".join(parts[:k]).startswith(err.name):
                raise  # a module that exists failed to import one of its own dependencies
            continue
        for attr in parts[k:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(f"no importable prefix of {dotted}")


def test_sections_numbered_consecutively():
    sections = SECTION_HEADING.findall(THEORY.read_text(encoding="utf-8"))
    assert sections, "the theory page has no '## §<number> ...' headings"
    assert [int(n) for n in sections] == list(range(1, len(sections) + 1))


def test_named_code_exists():
    names = sorted(set(DOTTED.findall(THEORY.read_text(encoding="utf-8"))))
    assert len(names) > 50, f"expected the page to name the implementing functions, found {len(names)}"
    missing = []
    for name in names:
        try:
            resolve(name)
        except (ImportError, AttributeError) as err:
            missing.append(f"{name}: {err}")
    assert not missing, "docs/theory.md names code that does not exist:\n" + "\n".join(missing)


def test_resolve_rejects_missing_names():
    assert resolve("sslkit.theory.linear.s_closed_form").__name__ == "s_closed_form"
    with pytest.raises(AttributeError):
        resolve("sslkit.theory.linear.no_such_function")
    with pytest.raises(ImportError):
        resolve("sslkit_no_such_package.x")


def test_citations_point_into_the_page():
    sections = _sections()
    bad, n_cited = [], 0
    for p in _text_files():
        for lineno, line in enumerate(_read(p).splitlines(), 1):
            for m in CITATION.finditer(line):
                for n in re.findall(r"§(\d+)", m.group(1)):
                    n_cited += 1
                    if int(n) not in sections:
                        bad.append(f"{p.relative_to(REPO)}:{lineno}: §{n}")
    assert n_cited >= 15, f"expected the code to cite docs/theory.md sections, found {n_cited} citations"
    assert not bad, f"citations of sections docs/theory.md does not have (it has {sorted(sections)}):\n" + \
        "\n".join(bad)


def test_no_reference_outside_the_repo():
    bad = []
    for p in _text_files():
        for lineno, line in enumerate(_read(p).splitlines(), 1):
            if len(re.findall(r"theory\.md", line)) != len(GOOD_PATH.findall(line)):
                bad.append(f"{p.relative_to(REPO)}:{lineno}: {line.strip()}")
    assert not bad, "references to a theory page other than docs/theory.md:\n" + "\n".join(bad)


def test_reference_checks_catch_bad_references():
    page = "theory" + ".md"  # spelled apart so that this file passes the scan above
    for wrong in (f"see ../elsewhere/docs/{page}", f"(``{page}`` §1)", f"/abs/docs/{page}"):
        assert len(re.findall(r"theory\.md", wrong)) != len(GOOD_PATH.findall(wrong)), wrong
    assert len(GOOD_PATH.findall(f"(``docs/{page}`` §1)")) == 1
    cited = [re.findall(r"§(\d+)", m.group(1)) for m in CITATION.finditer("docs/theory.md §2, §10 and §3")]
    assert cited == [["2", "10", "3"]]
    cited = [re.findall(r"§(\d+)", m.group(1)) for m in CITATION.finditer("(``docs/theory.md`` §1-§5): x §9")]
    assert cited == [["1", "5"]]
