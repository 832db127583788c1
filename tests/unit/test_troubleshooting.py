"""docs/troubleshooting.md lists every one-line failure message the package has, and only those.

The messages are read from the package's source (its AST; nothing is imported or run), as templates in
which every interpolated value is ``…``:

- the message given to an error class deriving from ``ProvisioningError`` (``raise X("…")``, ``return
  X(f"…")``, ``super().__init__(f"…")`` inside such a class), and to an error class chosen at run time
  (``raise kind(f"…")``, ``raise type(exc)(f"…")``: the hooks pick those from their error tables);
- a message built by a function of the package (``X(_message(…))``, ``ceiling_message(…)``): each string
  that function returns;
- a message held in a local variable: the string assigned to it in the same function;
- config problems: ``out.add(field, "…")`` and ``Problem("…")`` in ``config.py``, and ``raise
  ValueError("…")`` in ``config.py`` and ``urls.py`` (a field check's ``ValueError`` becomes the problem).

The page lists each template as a bullet that starts with it in a code span (`` - `template` … ``).
Both sides are compared after normalising: ``{name}`` and runs of ``…`` become one ``…``, white space
collapses. Hand-written entries, checked both ways: a new message fails the test until it is explained,
an entry for a message that is gone fails it too.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "plugins" / "entra_provisioning"
PAGE = REPO / "docs" / "troubleshooting.md"

BASE_ERROR = "ProvisioningError"
#: Modules whose ``ValueError`` messages reach the user as config problems.
CONFIG_MODULES = frozenset({"config.py", "urls.py"})
PLACEHOLDER = "…"


@dataclass(frozen=True)
class Message:
    template: str
    where: str  # module:line

    @property
    def key(self) -> str:
        return normalise(self.template)


def normalise(template: str) -> str:
    text = re.sub(r"\{[^{}]*\}", PLACEHOLDER, template)
    text = " ".join(text.split())
    return re.sub(rf"{PLACEHOLDER}(?:\s*{PLACEHOLDER})+", PLACEHOLDER, text)


def _template(node: ast.expr | None, scope: _Scope) -> list[str]:
    """The templates an expression can produce ([] when it holds no literal text)."""
    if node is None:
        return []
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        parts = [
            v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else PLACEHOLDER
            for v in node.values
        ]
        return ["".join(parts)]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left = _template(node.left, scope) or [PLACEHOLDER]
        right = _template(node.right, scope) or [PLACEHOLDER]
        return [a + b for a in left for b in right]
    if isinstance(node, ast.Name) and node.id in scope.assigned:
        return _template(scope.assigned[node.id], scope)
    if isinstance(node, ast.Call):
        name = _callee_name(node.func)
        if name in scope.functions:
            return [t for ret in scope.functions[name] for t in _template(ret, scope.of(ret))]
    return [PLACEHOLDER]


def _callee_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


@dataclass
class _Scope:
    """What a message expression may refer to: the enclosing function's assignments, the package's
    functions (their returned expressions) and which function each returned expression belongs to."""

    assigned: dict[str, ast.expr]
    functions: dict[str, list[ast.expr]]
    owners: dict[int, dict[str, ast.expr]]

    def of(self, node: ast.expr) -> _Scope:
        return _Scope(self.owners.get(id(node), {}), self.functions, self.owners)


def _assignments(func: ast.AST) -> dict[str, ast.expr]:
    found: dict[str, ast.expr] = {}
    for node in ast.walk(func):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            found[node.targets[0].id] = node.value
    return found


def error_classes(trees: dict[str, ast.Module]) -> set[str]:
    """Names of every class deriving (within the package) from ``ProvisioningError``, itself included."""
    bases: dict[str, set[str]] = {}
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                bases[node.name] = {n for b in node.bases if (n := _callee_name(b))}
    found = {BASE_ERROR}
    while True:
        more = {name for name, parents in bases.items() if parents & found} - found
        if not more:
            return found
        found |= more


def _functions(
    trees: dict[str, ast.Module],
) -> tuple[dict[str, list[ast.expr]], dict[int, dict[str, ast.expr]]]:
    returns: dict[str, list[ast.expr]] = {}
    owners: dict[int, dict[str, ast.expr]] = {}
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assigned = _assignments(node)
                for sub in ast.walk(node):
                    if isinstance(sub, ast.Return) and sub.value is not None:
                        returns.setdefault(node.name, []).append(sub.value)
                        owners[id(sub.value)] = assigned
    return returns, owners


def _enclosing(tree: ast.Module) -> Iterator[tuple[ast.AST, ast.ClassDef | None, ast.AST]]:
    """``(node, class, function-or-module)`` for every node, with its innermost class and function."""

    def walk(
        node: ast.AST, cls: ast.ClassDef | None, func: ast.AST
    ) -> Iterator[tuple[ast.AST, ast.ClassDef | None, ast.AST]]:
        for child in ast.iter_child_nodes(node):
            yield child, cls, func
            if isinstance(child, ast.ClassDef):
                yield from walk(child, child, func)
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                yield from walk(child, cls, child)
            else:
                yield from walk(child, cls, func)

    yield from walk(tree, None, tree)


def extract_messages(
    package: Path = PACKAGE, config_modules: frozenset[str] = CONFIG_MODULES
) -> list[Message]:
    """Every message template of the package under ``package`` (see the module docstring)."""
    trees = {
        str(path.relative_to(package)): ast.parse(path.read_text(encoding="utf-8"))
        for path in sorted(package.rglob("*.py"))
    }
    errors = error_classes(trees)
    functions, owners = _functions(trees)
    messages: list[Message] = []
    for module, tree in trees.items():
        is_config = Path(module).name in config_modules
        raised: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                raised.add(id(node.exc))
        for node, cls, func in _enclosing(tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            name = _callee_name(node.func)
            first: ast.expr | None = node.args[0]
            dynamic = (
                (
                    isinstance(node.func, ast.Call) and _callee_name(node.func.func) == "type"  # type(exc)(…)
                )
                or (
                    id(node) in raised  # raise kind(…), kind taken from an error table
                    and isinstance(node.func, ast.Name)
                    and name not in errors
                    and not node.func.id[:1].isupper()
                )
            )
            in_error_class = (
                cls is not None
                and cls.name in errors
                and name == "__init__"
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Call)
                and _callee_name(node.func.value.func) == "super"
            )
            if name in errors or dynamic or in_error_class:
                pass
            elif is_config and module.endswith("config.py") and name == "add" and len(node.args) == 2:
                first = node.args[1]
            elif (is_config and module.endswith("config.py") and name == "Problem") or (
                is_config and name == "ValueError" and id(node) in raised
            ):
                pass
            else:
                continue
            scope = _Scope(_assignments(func), functions, owners)
            for template in _template(first, scope):
                if re.search(r"[A-Za-z]{2}", template):  # a bare value (str(exc), a name) is no template
                    messages.append(Message(template, f"{module}:{node.lineno}"))
    unique: dict[str, Message] = {}
    for message in messages:
        unique.setdefault(message.key, message)
    return sorted(unique.values(), key=lambda m: m.where)


_ENTRY_RE = re.compile(r"^\s*[-*]\s+(`+)(?P<code>.+?)\1")


def documented(page_text: str) -> dict[str, int]:
    """Normalised template → line of every entry (a bullet starting with a code span) outside code blocks."""
    found: dict[str, int] = {}
    fenced = False
    for number, line in enumerate(page_text.splitlines(), start=1):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        match = None if fenced else _ENTRY_RE.match(line)
        if match:
            found.setdefault(normalise(match["code"].strip()), number)
    return found


def coverage_problems(messages: list[Message], page_text: str) -> list[str]:
    entries = documented(page_text)
    keys = {m.key for m in messages}
    problems = [
        f"{m.where}: no entry in docs/troubleshooting.md for  - `{m.key}`"
        for m in messages
        if m.key not in entries
    ]
    problems += [
        f"docs/troubleshooting.md:{line}: entry `{key}` matches no message in the package any more"
        for key, line in entries.items()
        if key not in keys
    ]
    return problems


# ----------------------------------------------------------------------------------------- the page


def test_every_message_is_explained_and_every_entry_is_a_message() -> None:
    problems = coverage_problems(extract_messages(), PAGE.read_text(encoding="utf-8"))
    assert not problems, "\n".join(problems)


def test_the_extractor_finds_the_messages_it_must() -> None:
    keys = {m.key for m in extract_messages()}
    for expected in (
        "… does not exist",  # Key Vault, through _message()
        "Refusing to add … new users: max_new_users_per_run is … (… members are already present).",
        "the token's user … is not a workspace admin (not in the '…' group)",
        "… asked to retry …after … s, more than the … s ceiling; failing so that Airflow can retry the task later",
        "unknown key…",  # config.py's out.add
        "must be an https:// URL (the token must never travel in clear text)",  # urls.py's ValueError
        "… in …: - …",  # ConfigError's heading, from a local variable
        "… user(s) could not be added (the others were): …. A retry adds only what is still missing.",
        "… failed (HTTP …)…: …",  # ``raise kind(…)``, the class taken from an error table
        "… still failing after … attempts: …",  # ``return type(exc)(…)``
    ):
        assert any(key.startswith(expected) for key in keys), expected


# ------------------------------------------------------------------------------------- synthetic


def _package(root: Path, **modules: str) -> Path:
    package = root / "pkg"
    package.mkdir()
    (package / "errors.py").write_text(
        "class ProvisioningError(Exception): ...\n"
        "class PermanentError(ProvisioningError): ...\n"
        "class GroupGoneError(PermanentError): ...\n"
    )
    for name, text in modules.items():
        (package / f"{name}.py").write_text(text)
    return package


def test_a_new_raise_without_an_entry_fails(tmp_path: Path) -> None:
    package = _package(
        tmp_path,
        hook="from pkg.errors import GroupGoneError\n"
        "def f(group):\n"
        "    raise GroupGoneError(f'group {group!r} is gone')\n"
        "def g():\n"
        "    raise ValueError('a programming error, not a message')\n",
    )
    messages = extract_messages(package)
    assert [m.key for m in messages] == ["group … is gone"]
    assert coverage_problems(messages, "# Page\n\n- `group {name} is gone`: what to do.\n") == []
    problems = coverage_problems(messages, "# Page\n")
    assert len(problems) == 1 and "hook.py:3: no entry" in problems[0] and "group … is gone" in problems[0]


def test_an_entry_for_a_message_that_is_gone_fails(tmp_path: Path) -> None:
    package = _package(tmp_path)
    problems = coverage_problems(extract_messages(package), "- `group … is gone`: an old entry\n")
    assert len(problems) == 1 and "matches no message" in problems[0]


def test_a_new_raise_in_the_real_package_fails_the_real_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check over the real package and page, with one module gaining an unexplained raise."""
    copy = tmp_path / "entra_provisioning"
    for path in PACKAGE.rglob("*.py"):
        target = copy / path.relative_to(PACKAGE)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    hook = copy / "hooks" / "scim.py"
    hook.write_text(
        hook.read_text() + "\n\ndef _new():\n    raise ScimError('the workspace is on fire')\n",
        encoding="utf-8",
    )
    problems = coverage_problems(extract_messages(copy), PAGE.read_text(encoding="utf-8"))
    assert problems == [
        f"hooks/scim.py:{len(hook.read_text().splitlines())}: no entry in docs/troubleshooting.md for "
        " - `the workspace is on fire`"
    ]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("raise GroupGoneError('plain')", ["plain"]),
        ("raise GroupGoneError(f'a {x} b' 'c')", ["a … bc"]),
        ("raise GroupGoneError('head' + (f' tail {x}' if x else ''))", ["head…"]),
        ("msg = f'from {x} a variable'\n    raise GroupGoneError(msg)", ["from … a variable"]),
        ("raise GroupGoneError(helper(x))", ["helped …", "not helped"]),
        ("raise kind(f'HTTP {status}: chosen at run time')", ["HTTP …: chosen at run time"]),
        ("raise type(exc)(f'{what} failed')", ["… failed"]),
        ("return type(exc)(f'{what} still failing')", ["… still failing"]),
        ("return GroupGoneError(f'given up on {x}')", ["given up on …"]),
        ("raise GroupGoneError(str(exc))", []),
        ("raise RuntimeError('not ours')", []),
        ("raise ValueError('not a config module')", []),
    ],
)
def test_templates(tmp_path: Path, source: str, expected: list[str]) -> None:
    package = _package(
        tmp_path,
        mod="from pkg.errors import GroupGoneError\n"
        "def helper(x):\n"
        "    if x:\n"
        "        return f'helped {x}'\n"
        "    return 'not helped'\n"
        f"def f(x, kind, exc, what, status):\n    {source}\n",
    )
    assert sorted(m.template for m in extract_messages(package)) == sorted(expected)


def test_config_problems_are_messages(tmp_path: Path) -> None:
    package = _package(
        tmp_path,
        config="def check(out, value, key):\n"
        "    out.add(key, f'must be an integer, got {type(value).__name__}')\n"
        "    problems = [Problem('the file must be a mapping')]\n"
        "    raise ValueError('must name at least one group')\n",
        urls="def parse(url):\n    raise ValueError(f'must be a URL like {url}')\n",
        plan="def f(out):\n    out.add(1, 'not config')\n    raise ValueError('an invariant')\n",
    )
    assert sorted(m.key for m in extract_messages(package)) == [
        "must be a URL like …",
        "must be an integer, got …",
        "must name at least one group",
        "the file must be a mapping",
    ]
