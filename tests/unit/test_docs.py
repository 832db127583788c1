"""The documentation cannot go stale unnoticed: its links resolve and its shell commands are tested.

Checked over ``README.md``, ``docs/*.md``, ``SECURITY.md`` and ``CHANGELOG.md`` (those that exist), by
parsing files only (no subprocess, no network), so it belongs with the unit tests.

**Links.** Every relative Markdown link, ``[text](path)``, ``[text](path#anchor)``, ``[text](#anchor)``,
an image's ``![alt](path)`` and a reference definition ``[id]: path``, must name a file or folder that
exists relative to the linking file; an anchor into a Markdown file must exist there. Anchors are
GitHub's: each ATX heading's text, lower-cased, with everything but letters, digits, spaces, ``-`` and
``_`` removed (letters of any script are kept) and spaces turned into ``-``; a repeated heading gets
``-1``, ``-2``, …; an explicit ``<a id="…">`` or ``<a name="…">`` is an anchor too. Links with a scheme
(``http(s):``, ``mailto:``, …) are not followed; fenced code blocks and inline code are not links.

**Shell blocks.** Every fenced block whose info string is ``bash``, ``sh``, ``shell`` or ``console`` is
preceded (its nearest non-blank line) by exactly one marker:

- ``<!-- checked-by: tests/<path>.py::<test_function> -->``: the file exists and defines that test
  function (``Class::method`` also works). Each command of the block must then *appear* in what that
  test reads: the test module, the ``conftest.py`` files pytest loads for it, and every module of this
  repository (``demo/``, ``bench/``, ``sandbox/``, ``plugins/entra_provisioning/``) those import directly.
  "Appear" is a heuristic: the command's first two words (``airflow dags``, ``make demo``,
  ``python -m``) occur in that code in order, the second at most three words after the first, where the
  code's words are its names and the words inside its string literals (docstrings included), comments
  excluded. So ``cluster.airflow("dags", "unpause", …)`` exercises ``airflow dags unpause``, a docstring
  saying "``make bench``" vouches for ``make bench``, and ``[sys.executable, "-m", …]`` counts as
  ``python -m`` (``executable`` stands for ``python``/``python3``).
  Commands are the block's lines without comment lines and blank lines; a line ending in ``\\`` continues
  onto the next, which is not a command of its own; ``&&``, ``||``, ``;``, ``|`` and ``$( … )`` separate
  commands on one line; leading ``NAME=value`` assignments are skipped and a path's last part is the word
  (``.venv/bin/pytest`` is ``pytest``). In a ``console`` block only lines starting with ``$`` are commands.
- ``<!-- not-runnable-here: <reason> -->``: a non-empty reason (Docker, a real tenant, …).
"""

from __future__ import annotations

import ast
import io
import re
import shlex
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[2]

#: The top-level packages of this repository a test may import its commands from.
REPO_PACKAGES = {
    "demo": REPO / "demo",
    "bench": REPO / "bench",
    "sandbox": REPO / "sandbox",
    "entra_provisioning": REPO / "plugins" / "entra_provisioning",
}
SHELL_INFO = frozenset({"bash", "sh", "shell", "console"})

_FENCE_RE = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_HEADING_RE = re.compile(r"^ {0,3}(#{1,6})[ \t]+(?P<text>.*?)(?:[ \t]+#+)?[ \t]*$")
_ANCHOR_TAG_RE = re.compile(r"""<a\s[^>]*?\b(?:id|name)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
_INLINE_LINK_RE = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*(?P<target><[^>]*>|[^)\s]+)(?:\s+[^)]*)?\)")
_REF_DEF_RE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(?P<target><[^>]*>|\S+)")
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_MARKER_RE = re.compile(r"^\s*<!--\s*(?P<kind>checked-by|not-runnable-here):(?P<value>.*?)-->\s*$")
_ANY_MARKER_RE = re.compile(r"^\s*<!--\s*(checked-by|not-runnable-here)\b")
_CHECKED_BY_RE = re.compile(r"^(?P<path>tests/[\w./-]+\.py)::(?P<test>[A-Za-z_]\w*(?:::[A-Za-z_]\w*)*)$")
_ASSIGNMENT_RE = re.compile(r"^[A-Za-z_]\w*=")
_SEPARATORS = frozenset({"&&", "||", ";", "|", "&", "(", ")", ";;", "|&"})


# ------------------------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Fence:
    """A fenced code block: its info word, the line of its opening fence (0-based) and its lines."""

    info: str
    line: int
    body: tuple[str, ...]


@dataclass(frozen=True)
class Prose:
    """Markdown outside fenced code blocks, line by line; fences' lines are replaced by blanks."""

    lines: tuple[str, ...]
    fences: tuple[Fence, ...]


def split_fences(text: str) -> Prose:
    lines = text.splitlines()
    prose: list[str] = []
    fences: list[Fence] = []
    i = 0
    while i < len(lines):
        match = _FENCE_RE.match(lines[i])
        if not match or (match["fence"][0] == "`" and "`" in match["info"]):
            prose.append(lines[i])
            i += 1
            continue
        fence, start = match["fence"], i
        info = (match["info"].strip().split() or [""])[0].lower()
        body: list[str] = []
        i += 1
        closing = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        while i < len(lines) and not closing.match(lines[i]):
            body.append(lines[i])
            i += 1
        fences.append(Fence(info, start, tuple(body)))
        prose.extend([""] * (len(body) + 2))  # the fences and the body are no prose
        i += 1
    return Prose(tuple(prose[: len(lines)]), tuple(fences))


def strip_inline_code(line: str) -> str:
    """The line with every inline code span blanked out (a run of n backticks closes with n backticks)."""
    out: list[str] = []
    i = 0
    while i < len(line):
        if line[i] != "`":
            out.append(line[i])
            i += 1
            continue
        run = len(line) - len(line[i:].lstrip("`"))
        ticks = "`" * run
        end = line.find(ticks, i + run)
        while end != -1 and end + run < len(line) and line[end + run] == "`":
            end = line.find(ticks, end + run + 1)
        if end == -1:
            out.append(ticks)
            i += run
            continue
        out.append(" " * (end + run - i))
        i = end + run
    return "".join(out)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading (before de-duplication)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = re.sub(r"[^\w\- ]", "", text.lower())  # \w: letters and digits of any script, and '_'
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor a Markdown document defines: heading slugs (de-duplicated) and ``<a id/name>``."""
    prose = split_fences(text)
    seen: dict[str, int] = {}
    found: set[str] = set()
    for line in prose.lines:
        found.update(_ANCHOR_TAG_RE.findall(line))
        match = _HEADING_RE.match(line)
        if not match:
            continue
        slug = github_slug(match["text"])
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def link_targets(text: str) -> Iterator[tuple[int, str]]:
    """``(line number, target)`` of every link, image and reference definition outside code."""
    for number, line in enumerate(split_fences(text).lines, start=1):
        code_free = strip_inline_code(line)
        for match in _INLINE_LINK_RE.finditer(code_free):
            yield number, match["target"].strip("<>")
        ref = _REF_DEF_RE.match(code_free)
        if ref:
            yield number, ref["target"].strip("<>")


def link_problems(doc: Path) -> list[str]:
    """One line per relative link of ``doc`` that does not resolve."""
    problems: list[str] = []
    cache: dict[Path, set[str]] = {}
    for number, target in link_targets(doc.read_text(encoding="utf-8")):
        if _SCHEME_RE.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        where = f"{doc.name}:{number}: link {target!r}"
        dest = (doc.parent / unquote(path_part)).resolve() if path_part else doc
        if not dest.exists():
            problems.append(f"{where}: {path_part} does not exist")
            continue
        if not anchor or dest.is_dir() or dest.suffix.lower() not in (".md", ".markdown"):
            continue
        if dest not in cache:
            cache[dest] = anchors(dest.read_text(encoding="utf-8"))
        if unquote(anchor) not in cache[dest]:
            problems.append(f"{where}: no heading or <a id> gives the anchor #{anchor} in {dest.name}")
    return problems


# ------------------------------------------------------------------------------------------ commands


def block_commands(fence: Fence) -> list[list[str]]:
    """The commands of a shell block, each as its first two words (see the module docstring)."""
    lines: list[str] = []
    pending = ""
    for raw in fence.body:
        line = pending + raw
        pending = ""
        if line.rstrip().endswith("\\"):
            pending = line.rstrip()[:-1] + " "
            continue
        lines.append(line)
    if pending:
        lines.append(pending)
    commands: list[list[str]] = []
    for line in lines:
        stripped = line.strip()
        if fence.info == "console":
            if not stripped.startswith("$"):
                continue  # output
            stripped = stripped[1:].strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            lexer = shlex.shlex(stripped, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            tokens = list(lexer)
        except ValueError:  # an unbalanced quote: fall back to words
            tokens = stripped.split()
        current: list[str] = []
        for token in [*tokens, ";"]:
            if token in _SEPARATORS:
                if current:
                    commands.append(current[:2])
                current = []
            elif not current and (_ASSIGNMENT_RE.match(token) or token in ("$", "sudo", "exec")):
                continue
            else:
                current.append(token.rsplit("/", 1)[-1] if not current else token)
    return commands


_WORD_RE = re.compile(r"[\w./-]+")
#: Words a test writes differently from the shell: ``[sys.executable, "-m", …]`` runs ``python -m …``.
ALIASES = {"python": ("executable",), "python3": ("executable",)}
#: How many words after a command's first word its second may come (``airflow("dags", …)``, ``make bench``).
WINDOW = 3


def code_words(path: Path) -> list[str]:
    """A Python file's words in order: names, and the words inside string literals; comments left out."""
    source = path.read_text(encoding="utf-8")
    words: list[str] = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.NAME:
                words.append(token.string)
            elif token.type == tokenize.STRING:
                words.extend(_WORD_RE.findall(token.string))
    except (tokenize.TokenError, SyntaxError):
        words = _WORD_RE.findall(source)
    return words


def appears(command: list[str], words: list[str]) -> bool:
    """Whether the command's first word occurs with its second word at most :data:`WINDOW` words later."""
    first, rest = command[0], command[1:]
    firsts = {first, *ALIASES.get(first, ())}
    for i, word in enumerate(words):
        if word in firsts and (not rest or rest[0] in words[i + 1 : i + 1 + WINDOW]):
            return True
    return False


def _module_file(module: str) -> Path | None:
    top, _, rest = module.partition(".")
    base = REPO_PACKAGES.get(top)
    if base is None:
        return None
    path = base.joinpath(*rest.split(".")) if rest else base
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_repo_modules(path: Path) -> set[Path]:
    """The files of this repository's packages that ``path`` imports (directly), wherever it imports them."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytest_plugins" for t in node.targets
        ):
            names.extend(
                c.value
                for c in ast.walk(node.value)
                if isinstance(c, ast.Constant) and isinstance(c.value, str)
            )
    return {found for name in names if (found := _module_file(name)) is not None}


def test_context(test_file: Path, root: Path = REPO) -> list[Path]:
    """What a test reads: its module, the conftest.py files pytest loads for it, and what those import."""
    files = [test_file]
    folder = test_file.parent
    while True:
        if (folder / "conftest.py").is_file():
            files.append(folder / "conftest.py")
        if folder == root or folder.parent == folder or not folder.is_relative_to(root):
            break
        folder = folder.parent
    imported: set[Path] = set()
    for file in files:
        imported |= imported_repo_modules(file)
    return files + sorted(imported - set(files))


test_context.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


def defines_test(path: Path, dotted: str) -> bool:
    """Whether ``path`` defines ``func`` or ``Class::func`` (module level, or in the class)."""
    body: list[ast.stmt] = ast.parse(path.read_text(encoding="utf-8")).body
    parts = dotted.split("::")
    for i, name in enumerate(parts):
        last = i == len(parts) - 1
        kinds: tuple[type, ...] = (ast.FunctionDef, ast.AsyncFunctionDef) if last else (ast.ClassDef,)
        node = next((n for n in body if isinstance(n, kinds) and n.name == name), None)  # type: ignore[attr-defined]
        if node is None:
            return False
        body = node.body
    return True


def marker_problems(doc: Path, root: Path = REPO) -> list[str]:
    """One line per shell block of ``doc`` without a valid marker, or whose test does not run its commands."""
    text = doc.read_text(encoding="utf-8")
    lines = text.splitlines()
    prose = split_fences(text)
    problems: list[str] = []
    for fence in prose.fences:
        if fence.info not in SHELL_INFO:
            continue
        where = f"{doc.name}:{fence.line + 1}: ```{fence.info} block"
        before = [i for i in range(fence.line) if lines[i].strip()]
        marker_line = before[-1] if before else None
        match = _MARKER_RE.match(lines[marker_line]) if marker_line is not None else None
        if match is None:
            problems.append(
                f"{where} has no marker: put <!-- checked-by: tests/….py::test_… --> or "
                "<!-- not-runnable-here: <reason> --> on the line before it"
            )
            continue
        if len(before) > 1 and _ANY_MARKER_RE.match(lines[before[-2]]):
            problems.append(f"{where} has two markers; keep exactly one")
            continue
        value = match["value"].strip()
        if match["kind"] == "not-runnable-here":
            if not value:
                problems.append(f"{where}: not-runnable-here needs a reason")
            continue
        ref = _CHECKED_BY_RE.match(value)
        if ref is None:
            problems.append(f"{where}: checked-by {value!r} is not tests/<path>.py::<test_function>")
            continue
        test_file = root / ref["path"]
        if not test_file.is_file():
            problems.append(f"{where}: checked-by names {ref['path']}, which does not exist")
            continue
        if not defines_test(test_file, ref["test"]):
            problems.append(f"{where}: {ref['path']} defines no test {ref['test']}")
            continue
        context = test_context(test_file, root)
        words = [word for path in context for word in code_words(path)]
        unique = {tuple(command): command for command in block_commands(fence)}
        for command in unique.values():
            if not appears(command, words):
                problems.append(
                    f"{where}: command {' '.join(command)!r} does not appear in {ref['path']}, its "
                    "conftest.py files or the repository modules they import"
                )
    return problems


def documents(root: Path = REPO) -> list[Path]:
    """The Markdown this module checks, those that exist."""
    named = [root / "README.md", root / "SECURITY.md", root / "CHANGELOG.md"]
    return [p for p in named if p.is_file()] + sorted((root / "docs").glob("*.md"))


# --------------------------------------------------------------------------------- the real documents

_DOCS = documents()


@pytest.mark.parametrize("doc", _DOCS, ids=[str(p.relative_to(REPO)) for p in _DOCS])
def test_links_and_anchors_resolve(doc: Path) -> None:
    problems = link_problems(doc)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("doc", _DOCS, ids=[str(p.relative_to(REPO)) for p in _DOCS])
def test_shell_blocks_are_tested_or_say_why_not(doc: Path) -> None:
    problems = marker_problems(doc)
    assert not problems, "\n".join(problems)


def test_the_documents_are_found() -> None:
    names = {str(p.relative_to(REPO)) for p in _DOCS}
    assert {"README.md", "SECURITY.md", "docs/troubleshooting.md"} <= names


# ------------------------------------------------------------------------------ the rules, synthetic


def _write(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_slugs_follow_github() -> None:
    assert github_slug("What a run does") == "what-a-run-does"
    assert github_slug("Retries and failures") == "retries-and-failures"
    assert github_slug("`fetch_token`: Key Vault (403)") == "fetch_token-key-vault-403"
    assert github_slug("Entra ID → Azure Databricks, on Airflow") == "entra-id--azure-databricks-on-airflow"
    assert github_slug("Größe über Ελληνικά") == "größe-über-ελληνικά"
    assert github_slug("See [the docs](docs/x.md)!") == "see-the-docs"
    text = (
        "# Title\n## Notes\n### Notes\n#### Notes\n```\n# Notes\n```\n<a id=\"custom\"></a>\n<a name='other'>"
    )
    assert anchors(text) == {"title", "notes", "notes-1", "notes-2", "custom", "other"}


def test_good_links_pass(tmp_path: Path) -> None:
    _write(tmp_path, "docs/other.md", "# Other page\n## Dup\n## Dup\n")
    _write(tmp_path, "sandbox/README.md", "# Sandbox\n")
    _write(tmp_path, "docs/tool.py", "x = 1\n")
    doc = _write(
        tmp_path,
        "README.md",
        "# Top\n\n## Two words\n\n"
        "[self](#two-words) [page](docs/other.md) [anchor](docs/other.md#dup-1) [dir](sandbox/)\n"
        "![img](docs/other.md) [web](https://example.com/missing#x) [mail](mailto:a@b.c)\n"
        "[code file](docs/tool.py#L3) `[not a link](nowhere.md)`\n"
        "```\n[not a link either](nowhere.md)\n```\n"
        "[ref]: docs/other.md#other-page\n",
    )
    _write(tmp_path, "docs/page.md", '[up](../README.md#top) [title](other.md "a title")\n')
    assert link_problems(doc) == []
    assert link_problems(tmp_path / "docs" / "page.md") == []


@pytest.mark.parametrize(
    ("markdown", "complaint"),
    [
        ("[x](missing.md)", "missing.md does not exist"),
        ("[x](#nowhere)", "anchor #nowhere in README.md"),
        ("[x](docs/other.md#dup-2)", "anchor #dup-2 in other.md"),
        ("[x](docs/other.md#Other-Page)", "anchor #Other-Page"),
        ("![x](img/missing.png)", "img/missing.png does not exist"),
        ("[x]: docs/gone.md", "docs/gone.md does not exist"),
        ("[x](other.md)", "other.md does not exist"),  # relative to the linking file, not to docs/
    ],
)
def test_bad_links_fail(tmp_path: Path, markdown: str, complaint: str) -> None:
    _write(tmp_path, "docs/other.md", "# Other page\n## Dup\n## Dup\n")
    doc = _write(tmp_path, "README.md", f"# Top\n\n{markdown}\n")
    problems = link_problems(doc)
    assert len(problems) == 1 and complaint in problems[0], problems


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small repository: a test module, its conftest, and a repository module the conftest imports."""
    _write(tmp_path, "demo/__init__.py", "")
    _write(tmp_path, "demo/helper.py", 'def airflow(*args):\n    return ["airflow", *args]\n')
    _write(tmp_path, "tests/e2e/conftest.py", "from demo.helper import airflow  # noqa\n")
    _write(
        tmp_path,
        "tests/e2e/test_ops.py",
        "class TestGroup:\n    def test_inner(self):\n        pass\n\n"
        "def test_ops(run):\n"
        '    airflow("dags", "test", "x")  # make demo is only mentioned in this comment\n'
        '    run("python", "-m", "entra_provisioning", "validate")\n',
    )
    monkeypatch.setitem(REPO_PACKAGES, "demo", tmp_path / "demo")
    return tmp_path


def _doc(root: Path, text: str) -> Path:
    return _write(root, "docs/page.md", text)


def test_markers_pass(repo: Path) -> None:
    doc = _doc(
        repo,
        "Intro.\n\n<!-- checked-by: tests/e2e/test_ops.py::test_ops -->\n\n```bash\n"
        "# a comment line\n"
        "airflow dags test some_dag --conf '{\"dry_run\": true}'   # trailing comment\n"
        "PYTHONPATH=plugins python -m entra_provisioning validate a.yaml \\\n"
        "    make demo-is-a-continuation-line\n```\n\n"
        "<!-- checked-by: tests/e2e/test_ops.py::TestGroup::test_inner -->\n```console\n$ airflow dags test x\n```\n\n"
        "<!-- not-runnable-here: needs Docker -->\n```sh\ndocker compose up -d\n```\n\n"
        "```yaml\nno: marker needed\n```\n\n```\nnor here\n```\n",
    )
    assert marker_problems(doc, repo) == []


def test_console_blocks_check_only_prompt_lines(repo: Path) -> None:
    doc = _doc(
        repo,
        "<!-- checked-by: tests/e2e/test_ops.py::test_ops -->\n```console\n$ airflow dags test x\n"
        "some output that is not a command\n```\n",
    )
    assert marker_problems(doc, repo) == []


@pytest.mark.parametrize(
    ("before", "body", "complaint"),
    [
        ("Just prose.\n", "airflow dags test x", "has no marker"),
        ("", "airflow dags test x", "has no marker"),
        (
            "<!-- checked-by: tests/e2e/test_ops.py::test_ops -->\nprose in between\n",
            "airflow dags",
            "has no marker",
        ),
        ("<!-- not-runnable-here: -->\n", "docker compose up", "needs a reason"),
        ("<!-- not-runnable-here:    -->\n", "docker compose up", "needs a reason"),
        (
            "<!-- not-runnable-here: Docker -->\n<!-- checked-by: tests/e2e/test_ops.py::test_ops -->\n",
            "airflow dags",
            "two markers",
        ),
        ("<!-- checked-by: test_ops -->\n", "airflow dags", "is not tests/<path>.py::<test_function>"),
        ("<!-- checked-by: tests/e2e/test_gone.py::test_ops -->\n", "airflow dags", "does not exist"),
        (
            "<!-- checked-by: tests/e2e/test_ops.py::test_gone -->\n",
            "airflow dags",
            "defines no test test_gone",
        ),
        ("<!-- checked-by: tests/e2e/test_ops.py::test_inner -->\n", "airflow dags", "defines no test"),
        (
            "<!-- checked-by: tests/e2e/test_ops.py::test_ops -->\n",
            "make demo",
            "'make demo' does not appear",
        ),
        (
            "<!-- checked-by: tests/e2e/test_ops.py::test_ops -->\n",
            "airflow users list",
            "'airflow users' does not appear",
        ),
        (
            "<!-- checked-by: tests/e2e/test_ops.py::test_ops -->\n",
            "airflow dags test x && curl -s http://x",
            "'curl -s'",
        ),
        (
            "<!-- checked-by: tests/e2e/test_ops.py::test_ops -->\n",
            "TOKEN=$(curl -s http://x | python -m json.tool)",
            "'curl -s'",
        ),
    ],
)
def test_markers_fail(repo: Path, before: str, body: str, complaint: str) -> None:
    doc = _doc(repo, f"# Page\n\n{before}\n```bash\n{body}\n```\n")
    problems = marker_problems(doc, repo)
    assert len(problems) == 1 and complaint in problems[0], problems


def test_commands_are_split_the_documented_way() -> None:
    fence = Fence(
        "bash",
        0,
        (
            "# comment",
            "",
            "make validate-config CONFIG=path/to/file.yaml   # note",
            "PYTHONPATH=plugins python -m entra_provisioning validate x.yaml",
            "airflow backfill create --dag-id x \\",
            "    --from-date 2026-01-01 --to-date 2026-01-02",
            "docker compose up airflow-init && docker compose up -d",
            "TOKEN=$(curl -s -X POST http://x | python3 -c 'import json')",
            ".venv/bin/pytest tests/unit -q",
            "AIRFLOW__CORE__XCOM_BACKEND=a.b.C",
        ),
    )
    assert block_commands(fence) == [
        ["make", "validate-config"],
        ["python", "-m"],
        ["airflow", "backfill"],
        ["docker", "compose"],
        ["docker", "compose"],
        ["curl", "-s"],
        ["python3", "-c"],
        ["pytest", "tests/unit"],
    ]


def test_test_context_includes_conftest_and_its_repo_imports(repo: Path) -> None:
    context = test_context(repo / "tests" / "e2e" / "test_ops.py", repo)
    assert context == [
        repo / "tests/e2e/test_ops.py",
        repo / "tests/e2e/conftest.py",
        repo / "demo/helper.py",
    ]


@pytest.mark.parametrize(
    ("command", "words", "found"),
    [
        (["airflow", "dags"], ["cluster", "airflow", "dags", "unpause"], True),
        (["airflow", "dags"], ["airflow", "x", "y", "dags"], True),
        (["airflow", "dags"], ["airflow", "w", "x", "y", "dags"], False),  # beyond the window
        (["airflow", "dags"], ["dags", "airflow"], False),  # order matters
        (["python", "-m"], ["sys", "executable", "-m", "entra_provisioning"], True),
        (["make"], ["make"], True),
    ],
)
def test_a_command_appears_when_its_words_are_close(
    command: list[str], words: list[str], found: bool
) -> None:
    assert appears(command, words) is found
