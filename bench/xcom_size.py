"""(x) Bytes per run in the metadata database: the members record as ours stores it against plain JSON.

``resolve_members`` returns the members record (``Resolution.to_record``), which Airflow stores as the
task's ``return_value`` XCom in every run. Ours is the compact record compressed (version 3); the naive
figure is the same rows as plain JSON (version 2, what this package stored before). Measured on a
deterministic, tenant-like population: random (uuid4) object ids, ``first.last`` userNames from a pool of
names with numbered collisions, display names that differ from the userName, a few guests, members in one
or two of four groups. Object ids are random, so they bound what any compression can do.

With ``--pg`` each value is also stored in a throwaway PostgreSQL database (``demo.distributed``'s
``fresh_database``: 127.0.0.1:5432 as ``postgres``, dropped afterwards) in a JSONB column like Airflow's
``xcom.value``, and ``pg_column_size`` reports what PostgreSQL keeps on disk for it (TOAST compresses large
values with pglz by itself, so the plain record is smaller there than as text).

    python -m bench.xcom_size --members 1000 100000 [--pg]     # prints one JSON document
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import uuid
from typing import Any

FIRST = [
    "anna",
    "bob",
    "carol",
    "dave",
    "erin",
    "frank",
    "grace",
    "heidi",
    "ivan",
    "judy",
    "karl",
    "lena",
    "mike",
    "nina",
    "oscar",
    "paula",
    "quinn",
    "rosa",
    "sam",
    "tina",
    "umar",
    "vera",
    "walt",
    "xena",
    "yusuf",
    "zoe",
    "ali",
    "beth",
    "chen",
    "dana",
    "eli",
    "fay",
    "gus",
    "hana",
    "igor",
    "jin",
    "kai",
    "li",
    "mo",
    "ola",
]
LAST = [
    "smith",
    "jones",
    "brown",
    "taylor",
    "wilson",
    "davies",
    "evans",
    "thomas",
    "johnson",
    "roberts",
    "walker",
    "wright",
    "robinson",
    "thompson",
    "white",
    "hughes",
    "edwards",
    "green",
    "hall",
    "wood",
    "harris",
    "lewis",
    "martin",
    "jackson",
    "clarke",
    "clark",
    "turner",
    "hill",
    "scott",
    "cooper",
    "morris",
    "ward",
    "moore",
    "king",
    "watson",
    "baker",
    "harrison",
    "morgan",
    "patel",
    "young",
    "allen",
    "mitchell",
    "james",
    "anderson",
    "phillips",
]
GROUPS = ("Data Engineers", "Analysts", "Data Scientists", "Platform")
DOMAIN = "contoso.com"


def population(members: int, seed: int = 7) -> Any:
    """A :class:`~entra_provisioning.plan.Resolution` of ``members`` tenant-like users."""
    from entra_provisioning.plan import resolve_members

    rng = random.Random(seed)
    taken: dict[str, int] = {}
    by_group: dict[str, list[dict[str, Any]]] = {group: [] for group in GROUPS}
    for _ in range(members):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        base = f"{first}.{last}"
        taken[base] = taken.get(base, 0) + 1
        local = base if taken[base] == 1 else f"{base}{taken[base]}"
        guest = rng.random() < 0.02
        obj = {
            "@odata.type": "#microsoft.graph.user",
            "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "userPrincipalName": (
                f"{local}_fabrikam.com#EXT#@contoso.onmicrosoft.com" if guest else f"{local}@{DOMAIN}"
            ),
            "mail": f"{local}@fabrikam.com" if guest else f"{local}@{DOMAIN}",
            "displayName": f"{first.title()} {last.title()}",
            "accountEnabled": True,
            "userType": "Guest" if guest else "Member",
        }
        chosen = rng.sample(GROUPS, 2 if rng.random() < 0.3 else 1)
        for group in chosen:
            by_group[group].append(obj)
    return resolve_members(by_group)


def measure(members: int) -> dict[str, Any]:
    """Bytes of the members record for ``members`` users: ours (version 3) and naive (plain JSON)."""
    from entra_provisioning.plan import Resolution

    resolution = population(members)
    started = time.perf_counter()
    ours = json.dumps(resolution.to_record(), separators=(",", ":"))
    encode_s = time.perf_counter() - started
    naive = json.dumps(resolution.to_record(compress=False), separators=(",", ":"))
    started = time.perf_counter()
    assert Resolution.from_record(json.loads(ours)) == resolution
    decode_s = time.perf_counter() - started
    return {
        "members": len(resolution.members),
        "naive_bytes": len(naive.encode()),
        "ours_bytes": len(ours.encode()),
        "naive_per_member": round(len(naive.encode()) / len(resolution.members), 1),
        "ours_per_member": round(len(ours.encode()) / len(resolution.members), 1),
        "ratio": round(len(naive.encode()) / len(ours.encode()), 2),
        "encode_s": round(encode_s, 3),
        "decode_s": round(decode_s, 3),
        "_values": (naive, ours),
    }


def pg_sizes(values: dict[str, tuple[str, str]]) -> dict[str, dict[str, int]]:
    """``pg_column_size`` of each (naive, ours) JSON value in a JSONB column, in a throwaway database."""
    import psycopg2

    from demo.distributed import POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER, fresh_database

    out: dict[str, dict[str, int]] = {}
    with fresh_database("entra_prov_bench_xcom_") as database:
        conn = psycopg2.connect(host=POSTGRES_HOST, port=POSTGRES_PORT, user=POSTGRES_USER, dbname=database)
        try:
            with conn, conn.cursor() as cur:
                cur.execute("CREATE TABLE xcom_like (name text PRIMARY KEY, value jsonb)")
                for label, (naive, ours) in values.items():
                    cur.execute(
                        "INSERT INTO xcom_like VALUES (%s, %s::jsonb), (%s, %s::jsonb)",
                        (f"naive-{label}", naive, f"ours-{label}", ours),
                    )
                cur.execute("SELECT name, pg_column_size(value) FROM xcom_like")
                sizes = dict(cur.fetchall())
        finally:
            conn.close()
    for label in values:
        out[label] = {"naive_pg_bytes": sizes[f"naive-{label}"], "ours_pg_bytes": sizes[f"ours-{label}"]}
    return out


def run(sizes: list[int], pg: bool = False) -> dict[str, Any]:
    rows = [measure(n) for n in sizes]
    out: dict[str, Any] = {"rows": rows, "pg": pg}
    if pg:
        try:
            found = pg_sizes({str(row["members"]): row["_values"] for row in rows})
        except Exception as exc:  # no PostgreSQL here: the text figures still stand
            out["pg_error"] = f"{type(exc).__name__}: {str(exc).strip()[:200]}"
        else:
            for row in rows:
                row.update(found[str(row["members"])])
    for row in rows:
        del row["_values"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--members", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument(
        "--pg", action="store_true", help="also measure in PostgreSQL JSONB (throwaway database)"
    )
    args = parser.parse_args(argv)
    json.dump(run(args.members, args.pg), sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
