"""Command line tools for people who edit the workspaces file.

``python -m entra_provisioning validate [FILE ...]`` checks files the way the DAG file will, prints each
problem (file, entry, field) and exits non-zero if any file is invalid, so it can gate a pull request.
With ``--allow-bad-entries`` it exits non-zero only for a file unusable as a whole, the one case in which
Airflow builds no DAG at all (a deployment's start-up check: the valid entries run, the bad ones show as
an import error).
``fields`` prints the field tables of ``docs/configuration.md`` and ``schema`` the JSON Schema, both
generated from the one field table (``config_fields.py``); ``schema --write FILE --docs
docs/configuration.md`` (``make schema``) rewrites the committed copies, ``--check`` only reports whether
they are current.
``pool --create [FILE]`` creates (or updates) the Airflow pool named by ``settings.graph_pool`` with
``settings.graph_pool_slots`` through Airflow's own CLI (``airflow pools set``; it needs the metadata
database, so it runs where ``airflow db migrate`` does: ``airflow-init``, ``make ui``); ``pool`` alone only
checks that it exists and exits 1 if not, because Airflow never schedules a task whose pool is missing.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from entra_provisioning.config import ConfigError, Settings, load_config_report
from entra_provisioning.factory import config_path


def _validate(paths: Sequence[str], allow_bad_entries: bool = False) -> int:
    status = 0
    for path in paths or [str(config_path())]:
        try:
            report = load_config_report(path)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            print(f"{path}: unusable as a whole: Airflow builds no DAG from it", file=sys.stderr)
            status = 1
            continue
        config = report.config
        enabled = config.enabled_workspaces
        error = report.error()
        if error is not None:
            print(error, file=sys.stderr)
            status = status if allow_bad_entries else 1
            rejected = len(report.rejected)
            print(
                f"{path}: {rejected} entr{'y' if rejected == 1 else 'ies'} rejected (no DAG); the other "
                f"{len(config.workspaces)} workspace(s) are valid, {len(enabled)} enabled"
            )
        else:
            print(f"{path}: OK, {len(config.workspaces)} workspace(s), {len(enabled)} enabled")
        for ws in config.workspaces:
            state = "" if ws.enabled else "  (disabled)"
            print(
                f"  {ws.dag_id}  {ws.databricks_instance}  schedule={ws.schedule or 'manual'}"
                f"  groups={len(ws.entra_groups)}{state}"
            )
        if config.settings.graph_pool:
            print(f"  {_pool_note(config.settings)}")
    return status


def _pool_note(settings: Settings) -> str:
    return (
        f"resolve_members runs in the Airflow pool {settings.graph_pool!r} ({settings.graph_pool_slots} "
        "slot(s)): it must exist, or Airflow never schedules the task (the scheduler log only says "
        '"Tasks using non-existent pool"). Create it with: python -m entra_provisioning pool --create'
    )


#: What ``pool --create`` writes as the pool's description in Airflow.
POOL_DESCRIPTION = "Entra provisioning: resolve_members (Microsoft Graph reads), from settings.graph_pool"


def _airflow(*args: str) -> subprocess.CompletedProcess[str]:
    """Airflow's own CLI, in this interpreter's environment (the same AIRFLOW_HOME and database)."""
    return subprocess.run(
        [sys.executable, "-m", "airflow", *args], capture_output=True, text=True, check=False
    )


def _pool(path: str | None, create: bool) -> int:
    shown = path or str(config_path())
    try:
        settings = load_config_report(shown).config.settings
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    if not settings.graph_pool:
        print(f"{shown}: settings.graph_pool is not set: resolve_members runs in Airflow's default pool")
        return 0
    name, slots = settings.graph_pool, settings.graph_pool_slots
    if create:
        done = _airflow("pools", "set", name, str(slots), POOL_DESCRIPTION)
        if done.returncode != 0:
            print(f"airflow pools set {name} failed:\n{done.stdout}{done.stderr}", file=sys.stderr)
            return 1
        print(f"pool {name!r}: {slots} slot(s) (created or updated)")
        return 0
    found = _airflow("pools", "get", name, "--output", "plain")
    if found.returncode != 0:
        print(f"pool {name!r} does not exist. {_pool_note(settings)}", file=sys.stderr)
        return 1
    print(f"pool {name!r} exists:\n{found.stdout.strip()}")
    return 0


def _schema(schema_file: str | None, docs: str | None, check: bool) -> int:
    from entra_provisioning.config_schema import replace_blocks, schema_text

    if schema_file is None and docs is None:
        print(schema_text(), end="")
        return 0
    wanted: dict[Path, str] = {}
    if schema_file is not None:
        wanted[Path(schema_file)] = schema_text()
    if docs is not None:
        wanted[Path(docs)] = replace_blocks(Path(docs).read_text(encoding="utf-8"))
    stale = {
        path: text
        for path, text in wanted.items()
        if not path.exists() or path.read_text(encoding="utf-8") != text
    }
    for path, text in stale.items():
        if check:
            print(f"{path} is out of date with config_fields.py: run `make schema`", file=sys.stderr)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    return 1 if check and stale else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m entra_provisioning", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    validate = commands.add_parser("validate", help="validate workspaces files; exit 1 on any problem")
    validate.add_argument("files", nargs="*", help="files to check (default: the file the DAGs read)")
    validate.add_argument(
        "--allow-bad-entries",
        action="store_true",
        help="still list bad entries, but exit 1 only for a file unusable as a whole (what stops every DAG)",
    )
    commands.add_parser("fields", help="print the configuration page's field tables (Markdown)")
    schema = commands.add_parser("schema", help="print the JSON Schema, or write/check the committed copies")
    schema.add_argument("--write", metavar="FILE", help="the JSON Schema file to (re)write")
    schema.add_argument(
        "--docs",
        metavar="FILE",
        help="a Markdown page whose generated tables to rewrite (docs/configuration.md)",
    )
    schema.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file is stale")
    pool = commands.add_parser(
        "pool", help="check (or --create) the Airflow pool of settings.graph_pool; exit 1 if it is missing"
    )
    pool.add_argument("file", nargs="?", help="the workspaces file (default: the file the DAGs read)")
    pool.add_argument(
        "--create",
        action="store_true",
        help="create or update the pool with settings.graph_pool_slots (airflow pools set)",
    )
    args = parser.parse_args(argv)
    if args.command == "validate":
        return _validate(args.files, args.allow_bad_entries)
    if args.command == "fields":
        from entra_provisioning.config_schema import markdown_blocks

        print("\n\n".join(markdown_blocks().values()))
        return 0
    if args.command == "schema":
        return _schema(args.write, args.docs, args.check)
    if args.command == "pool":
        return _pool(args.file, args.create)
    parser.error(f"unknown command {args.command}")
    return 2
