"""Command line tools for people who edit the workspaces file.

``python -m entra_provisioning validate [FILE ...]`` checks files the way the DAG file will, prints each
problem (file, entry, field) and exits non-zero if any file is invalid, so it can gate a pull request.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from entra_provisioning.config import ConfigError, load_config_report
from entra_provisioning.factory import config_path


def _validate(paths: Sequence[str]) -> int:
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
            status = 1
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
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m entra_provisioning", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    validate = commands.add_parser("validate", help="validate workspaces files; exit 1 on any problem")
    validate.add_argument("files", nargs="*", help="files to check (default: the file the DAGs read)")
    args = parser.parse_args(argv)
    if args.command == "validate":
        return _validate(args.files)
    parser.error(f"unknown command {args.command}")
    return 2
