"""Databricks SCIM groups and service principals: the part of the SCIM hook group mirroring needs.

A mixin of :class:`~entra_provisioning.hooks.scim.DatabricksScimHook`: the same request method, retry
policy, origin check and paces serve these endpoints, for a workspace or for the account.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from entra_provisioning.identities import ExistingGroup, ExistingServicePrincipal, ServicePrincipalMember

if TYPE_CHECKING:
    from entra_provisioning.hooks.scim import Pacer, ScimResponse

GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
SERVICE_PRINCIPAL_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:ServicePrincipal"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
SERVICE_PRINCIPALS_ENDPOINT = "ServicePrincipals"


@dataclass
class MembershipOutcome:
    """What the membership PATCHes of one group did."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    #: Why the group's PATCHes stopped (the first refusal), or ``None``.
    failure: str | None = None
    #: The stop was Databricks failing or throttling after every attempt (a later run may succeed), not
    #: a refusal.
    transient: bool = False


class ScimGroupsMixin:
    """Groups and service principals over the hook's one request method."""

    if TYPE_CHECKING:  # provided by DatabricksScimHook
        page_size: int
        read_pacer: Pacer | None
        list_pacer: Pacer | None
        pacer: Pacer
        account_id: str | None

        def _request(
            self,
            method: str,
            endpoint: str,
            *,
            params: dict[str, Any] | None = None,
            json: Any = None,
            path: str | None = None,
            pacer: Pacer | None = None,
        ) -> ScimResponse: ...

    # ----------------------------------------------------------------------------------------- groups

    def find_group(self, display_name: str) -> ExistingGroup | None:
        """The group of that display name (exact, as the SCIM filter matches it), with its members."""
        from entra_provisioning.hooks.scim import GROUPS_ENDPOINT, ScimError, escape_filter_value

        response = self._request(
            "GET",
            GROUPS_ENDPOINT,
            params={
                "filter": f'displayName eq "{escape_filter_value(display_name)}"',
                "attributes": "id,displayName,externalId,members",
            },
            pacer=self.read_pacer,
        )
        if response.status != 200 or not isinstance(response.body, dict):
            raise ScimError(f"looking up group {display_name!r} answered HTTP {response.status}")
        found = [
            _group(resource)
            for resource in response.body.get("Resources") or []
            if isinstance(resource, dict)
            and str(resource.get("displayName", "")).lower() == display_name.lower()
        ]
        return found[0] if found else None

    def create_group(self, display_name: str, external_id: str) -> tuple[ExistingGroup | None, str | None]:
        """Create an empty group carrying the Entra group's object id; ``(group, None)`` or
        ``(None, reason)``. A 409 (created meanwhile) is answered with the group found by name."""
        from entra_provisioning.hooks.scim import GROUPS_ENDPOINT, _error_detail_of

        body = {"schemas": [GROUP_SCHEMA], "displayName": display_name, "externalId": external_id}
        self.pacer.wait()
        response = self._request("POST", GROUPS_ENDPOINT, json=body)
        if response.status in (200, 201) and isinstance(response.body, dict):
            return _group(response.body), None
        if response.status == 409:
            found = self.find_group(display_name)
            if found is not None:
                return found, None
        return (
            None,
            f"creating group {display_name!r} answered HTTP {response.status}: {_error_detail_of(response.body)}",
        )

    def patch_members(
        self, group_id: str, add: Sequence[str], remove: Sequence[str] = (), *, batch_size: int
    ) -> MembershipOutcome:
        """Add and remove members of a group, ``batch_size`` members per PATCH; stops at the first refusal.

        A refusal (e.g. a group kept in sync by automatic identity management, answered with an internal
        error) is reported in :attr:`MembershipOutcome.failure`; what earlier batches did stays counted.
        """
        from entra_provisioning.hooks.scim import (
            GROUPS_ENDPOINT,
            ScimError,
            ScimUnavailableError,
            _error_detail_of,
        )

        outcome = MembershipOutcome()
        batches: list[tuple[str, list[str]]] = [
            ("add", list(add[i : i + batch_size])) for i in range(0, len(add), batch_size)
        ] + [("remove", list(remove[i : i + batch_size])) for i in range(0, len(remove), batch_size)]
        for op, ids in batches:
            if op == "add":
                operation: dict[str, Any] = {"op": "add", "value": {"members": [{"value": i} for i in ids]}}
                operations = [operation]
            else:
                operations = [{"op": "remove", "path": f'members[value eq "{i}"]'} for i in ids]
            body = {"schemas": [PATCH_SCHEMA], "Operations": operations}
            try:
                response = self._request(
                    "PATCH", f"{GROUPS_ENDPOINT}/{group_id}", json=body, pacer=self.pacer
                )
            except ScimUnavailableError as exc:
                outcome.failure, outcome.transient = str(exc), True
                return outcome
            except ScimError as exc:
                outcome.failure = str(exc)
                return outcome
            if response.status not in (200, 204):
                outcome.failure = (
                    f"changing the members of group {group_id} answered HTTP {response.status}: "
                    f"{_error_detail_of(response.body)}"
                )
                return outcome
            (outcome.added if op == "add" else outcome.removed).extend(ids)
        return outcome

    # ----------------------------------------------------------------------------- service principals

    def list_service_principals(self) -> list[ExistingServicePrincipal]:
        """Every service principal of the workspace (or account), de-duplicated by id."""
        from entra_provisioning.hooks.scim import ScimError

        seen: dict[str, ExistingServicePrincipal] = {}
        start = 1
        while True:
            response = self._request(
                "GET",
                SERVICE_PRINCIPALS_ENDPOINT,
                params={
                    "startIndex": start,
                    "count": self.page_size,
                    "attributes": "id,applicationId,displayName",
                },
                pacer=self.list_pacer,
            )
            if response.status != 200 or not isinstance(response.body, dict):
                raise ScimError(f"listing service principals answered HTTP {response.status}")
            resources = response.body.get("Resources") or []
            for sp in resources:
                if isinstance(sp, dict) and sp.get("id") and sp.get("applicationId"):
                    seen.setdefault(
                        str(sp["id"]),
                        ExistingServicePrincipal(
                            str(sp["id"]), str(sp["applicationId"]), str(sp.get("displayName") or "")
                        ),
                    )
            served = int(response.body.get("itemsPerPage") or len(resources))
            start += served
            if not resources or served <= 0 or start > int(response.body.get("totalResults") or 0):
                return list(seen.values())

    def create_service_principals(
        self, principals: Iterable[ServicePrincipalMember]
    ) -> tuple[dict[str, str], dict[str, str]]:
        """Create service principals (``applicationId`` = the Entra appId), one at a time at the create pace.

        :returns: ``({appId: Databricks id}, {appId: reason})`` for the created (or found on 409) and the
            failed ones.
        """
        from entra_provisioning.hooks.scim import (
            ScimError,
            ScimUnavailableError,
            _error_detail_of,
            escape_filter_value,
        )

        ids: dict[str, str] = {}
        failed: dict[str, str] = {}
        for sp in principals:
            body = {
                "schemas": [SERVICE_PRINCIPAL_SCHEMA],
                "applicationId": sp.application_id,
                "displayName": sp.display_name,
            }
            self.pacer.wait()
            try:
                response = self._request("POST", SERVICE_PRINCIPALS_ENDPOINT, json=body)
                if (
                    response.status in (200, 201)
                    and isinstance(response.body, dict)
                    and response.body.get("id")
                ):
                    ids[sp.application_id] = str(response.body["id"])
                    continue
                if response.status == 409:
                    found = self._request(
                        "GET",
                        SERVICE_PRINCIPALS_ENDPOINT,
                        params={"filter": f'applicationId eq "{escape_filter_value(sp.application_id)}"'},
                        pacer=self.read_pacer,
                    )
                    resources = (
                        (found.body or {}).get("Resources") or [] if isinstance(found.body, dict) else []
                    )
                    if resources and resources[0].get("id"):
                        ids[sp.application_id] = str(resources[0]["id"])
                        continue
                failed[sp.application_id] = f"HTTP {response.status}: {_error_detail_of(response.body)}"
            except (ScimError, ScimUnavailableError) as exc:
                failed[sp.application_id] = str(exc)
        return ids, failed


def _group(resource: dict[str, Any]) -> ExistingGroup:
    members = tuple(
        str(m["value"]) for m in resource.get("members") or [] if isinstance(m, dict) and m.get("value")
    )
    external = resource.get("externalId")
    return ExistingGroup(
        id=str(resource.get("id", "")),
        display_name=str(resource.get("displayName", "")),
        external_id=str(external) if external else None,
        member_ids=members,
    )
