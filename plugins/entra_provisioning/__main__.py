"""Command line: ``python -m entra_provisioning validate [FILE]``."""

from entra_provisioning.cli import main

raise SystemExit(main())
