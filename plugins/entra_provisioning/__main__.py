"""Command line: ``python -m entra_provisioning validate [FILE]``."""

# Airflow's plugin manager imports every module under plugins/, this one included: run only as a script.
if __name__ == "__main__":
    from entra_provisioning.cli import main

    raise SystemExit(main())
