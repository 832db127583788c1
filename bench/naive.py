"""The naive baseline: the shape of the per-workspace script this project replaces.

For each member of the group: one filtered SCIM GET (``userName eq "…"``), then a POST if the user is
absent, strictly one request at a time. Graph is read the sensible way (``$top=999``, following
``@odata.nextLink``), so the comparison is about the SCIM side, where the script spends its time.
It reuses one keep-alive HTTPS connection per host, which flatters it a little against a script that
reconnects for every call.

``sample`` processes a seeded random sample of that many members and reports the mean cost per member, so a run too long to measure in full can be extrapolated: the script is sequential, so its
time is the Graph part plus members × the mean per-member cost.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"


def _graph_token(http: Any, endpoints: dict[str, Any]) -> str:
    reader = endpoints["identities"]["graph-reader"]
    response = http.post(
        endpoints["identity"]["token_endpoint"],
        data={
            "grant_type": "client_credentials",
            "client_id": reader["client_id"],
            "client_secret": reader["client_secret"],
            "scope": "https://graph.microsoft.com/.default",
        },
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


def graph_members(http: Any, endpoints: dict[str, Any], group: str) -> list[dict[str, Any]]:
    """The group's transitive members, as the script would fetch them."""
    base = endpoints["graph"]["base_url"]
    headers = {"Authorization": f"Bearer {_graph_token(http, endpoints)}"}
    escaped = group.replace("'", "''")
    found = http.get(
        f"{base}/groups", params={"$filter": f"displayName eq '{escaped}'"}, headers=headers
    ).json()
    group_id = found["value"][0]["id"]
    url: str | None = f"{base}/groups/{group_id}/transitiveMembers"
    params: dict[str, Any] | None = {
        "$select": "id,userPrincipalName,mail,displayName,accountEnabled,userType",
        "$top": 999,
    }
    members: list[dict[str, Any]] = []
    while url:
        page = http.get(url, params=params, headers=headers)
        page.raise_for_status()
        body = page.json()
        members.extend(body.get("value", []))
        url, params = body.get("@odata.nextLink"), None
    return members


def sample_of(items: list[Any], size: int | None) -> list[Any]:
    """A seeded uniform random sample, in the original order.

    Not a stride: a stride can line up with a pattern in the data (every 20th member missing, say) and
    sample only one kind of member.
    """
    import random

    if not size or size >= len(items):
        return list(items)
    picked = sorted(random.Random(20240601).sample(range(len(items)), size))
    return [items[i] for i in picked]


def user_name_of(member: dict[str, Any]) -> str | None:
    upn = (member.get("userPrincipalName") or "").lower()
    if "#ext#" in upn:
        return (member.get("mail") or "").lower() or None
    return upn or None


def run(
    endpoints: dict[str, Any], workspace: str, token: str, group: str, sample: int | None
) -> dict[str, Any]:
    import httpx

    scim = endpoints["workspaces"][workspace]["scim"]
    counts = {"get": 0, "post": 0, "created": 0, "existed": 0}
    import resource

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    durations: list[float] = []
    with httpx.Client(verify=endpoints["ca_bundle"], timeout=60) as http:
        cpu_started = cpu()
        started = time.perf_counter()
        members = [m for m in graph_members(http, endpoints, group) if m.get("accountEnabled") is not False]
        graph_done = time.perf_counter()
        chosen = sample_of(members, sample)
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/scim+json"}
        for member in chosen:
            member_started = time.perf_counter()
            name = user_name_of(member)
            if not name:
                continue
            found = http.get(f"{scim}/Users", params={"filter": f'userName eq "{name}"'}, headers=headers)
            counts["get"] += 1
            if found.json().get("totalResults", 0):
                durations.append(time.perf_counter() - member_started)
                continue
            created = http.post(
                f"{scim}/Users",
                json={
                    "schemas": [USER_SCHEMA],
                    "userName": name,
                    "displayName": member.get("displayName") or name,
                    "externalId": member["id"],
                },
                headers=headers,
            )
            counts["post"] += 1
            counts["created" if created.status_code == 201 else "existed"] += 1
            durations.append(time.perf_counter() - member_started)
        finished = time.perf_counter()
        cpu_seconds = cpu() - cpu_started
    per_member = (finished - graph_done) / len(chosen) if chosen else 0.0
    return {
        "members": len(members),
        "processed": len(chosen),
        "sampled": len(chosen) < len(members),
        "graph_seconds": graph_done - started,
        "scim_seconds": finished - graph_done,
        "seconds": finished - started,
        "per_member_seconds": per_member,
        "cpu_seconds": cpu_seconds,
        # Per-member times, to check afterwards how well a sample would have predicted a full run.
        "member_seconds": durations if len(chosen) == len(members) else [],
        # The script is sequential: its full run is the Graph part plus every member at the mean cost.
        "estimated_seconds": (graph_done - started) + per_member * len(members),
        **counts,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoints", required=True)
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--sample", type=int, default=None)
    args = parser.parse_args(argv)
    with open(args.endpoints, encoding="utf-8") as handle:
        endpoints = json.load(handle)
    from bench.world import TOKEN

    # The script reads the same PAT from Key Vault first; like fetch_token on our side, that is untimed.
    result = run(endpoints, args.workspace, TOKEN, args.group, args.sample)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
