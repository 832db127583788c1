"""Exceptions raised by the provisioning package.

Every error a user can act on derives from :class:`ProvisioningError`, so a task failure shows one clear
message instead of a traceback from deep inside an SDK.
"""

from __future__ import annotations


class ProvisioningError(Exception):
    """Base class for every failure this package reports on purpose."""
