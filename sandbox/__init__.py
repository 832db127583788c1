"""Local, protocol-faithful stand-ins for Entra ID, Azure Key Vault, Microsoft Graph and Databricks SCIM.

Start it with ``python -m sandbox serve --seed FILE``; see ``sandbox/README.md``.
"""

from sandbox.client import ControlClient, SandboxProcess, env_for, load_endpoints
from sandbox.evidence import fingerprint

__all__ = ["ControlClient", "SandboxProcess", "env_for", "fingerprint", "load_endpoints"]
