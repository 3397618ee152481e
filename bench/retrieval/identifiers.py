"""Exact-identifier lookups among many look-alike distractors: error codes, tickets, hosts and people.

Hundreds of short notes of the same few shapes, where what tells them apart is an identifier: ERR-4711 next to
ERR-4717 and ERR-7411, PROJ-1234 next to PROJ-1243, db-eu-west-07 next to db-eu-west-01, and people who share a
first name or a surname. The questions name the identifier (sometimes bare, as an agent might type it) and ask for
something only its note says.
"""

from __future__ import annotations

import random
from typing import Any

COMPONENTS = (
    "billing exporter",
    "invoice renderer",
    "sync agent",
    "payment webhook handler",
    "report scheduler",
    "image resizer",
    "search indexer",
    "auth token service",
    "CSV importer",
    "email dispatcher",
)
# (condition, its fix)
FAILURES = (
    ("the currency table is older than a day", "rerun the rates sync and retry the job"),
    ("a customer record has no billing address", "ask the customer to complete their profile"),
    ("the upstream API returns HTTP 429 three times in a row", "wait an hour; the job retries itself with backoff"),
    ("a file is larger than 50 MB", "split the file and upload the parts"),
    ("the clock on the worker drifts more than two minutes", "restart chrony on the worker and requeue"),
    ("the tenant has been suspended mid-job", "reactivate the tenant before retrying"),
    ("two jobs try to lock the same account", "kill the older job from the admin console"),
    ("the template references a field that was renamed", "update the template to the new field name"),
    ("the disk on the worker is over 95 percent full", "clear the temp directory and requeue"),
    ("an OAuth refresh token has been revoked", "ask the user to reconnect the integration"),
    ("a webhook payload is not valid UTF-8", "drop the payload and ask the sender to resend"),
    ("the export contains more than a million rows", "run the export in monthly slices"),
)
ERROR_SHAPES = (
    "{code}: raised by the {component} when {condition}. Workaround: {fix}.",
    "Runbook note — {code} comes from the {component}; it means {condition}. To recover, {fix}.",
    "If you see {code} in the logs, the {component} gave up because {condition}. Usual fix: {fix}.",
)
ERROR_QUESTIONS = (
    ("What does {code} mean?", "{condition}"),
    ("Which component raises {code}?", "the {component}"),
    ("How do I recover from {code}?", "{fix}"),
    ("{code}", "{condition}; {fix}"),
)

PROJECTS = ("PROJ", "OPS", "WEB", "DATA", "MOB")
SUMMARIES = (
    "checkout page times out when the cart has more than 50 items",
    "password reset emails land in spam for Outlook users",
    "dashboard totals disagree with the monthly export",
    "Android app crashes when the camera permission is denied",
    "dark mode makes the chart legends unreadable",
    "duplicate invoices after a webhook retry",
    "search returns archived projects first",
    "CSV import silently drops rows with accents",
    "SSO login loops for users with two accounts",
    "nightly backup job overlaps with the reporting window",
    "map tiles fail to load behind the corporate proxy",
    "push notifications arrive twice on iOS",
    "timezone shown in emails is always UTC",
    "file previews are blank for HEIC images",
    "the onboarding checklist resets after logout",
)
PEOPLE = (
    "Priya Raman",
    "Priya Natarajan",
    "Tom Becker",
    "Tom Okafor",
    "Lucia Romero",
    "Lucia Ferreira",
    "Arjun Das",
    "Helen Das",
    "Mikko Virtanen",
    "Sara Lindgren",
    "Sara Lind",
    "Jamal Carter",
)
STATUSES = ("open", "in progress", "blocked", "in review", "done")
TICKET_SHAPES = (
    "{ticket} ({status}): {summary}. Assignee: {person}. Due {due}.",
    "Ticket {ticket} — {summary}. {person} owns it; status {status}, due {due}.",
    "Standup note: {person} is on {ticket} ({summary}), currently {status}, target date {due}.",
)
TICKET_QUESTIONS = (
    ("Who is assigned to {ticket}?", "{person}"),
    ("What is ticket {ticket} about?", "{summary}"),
    ("When is {ticket} due?", "{due}"),
    ("What's the status of {ticket}?", "{status}"),
    ("{ticket}", "{summary}"),
)
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

REGIONS = ("eu-west", "eu-central", "us-east", "us-west", "ap-south")
ROLES = ("db", "cache", "queue", "web", "batch")
HOST_FACTS = (
    "its disk is a smaller 200 GB volume, so large exports must not run there",
    "it still runs the old kernel and is excluded from automatic patching",
    "it is the replica that the finance reports read from",
    "it was rebuilt last month after a hardware fault and has no local backups yet",
    "its SSH port is 2222 because of an old firewall rule",
    "it holds the only copy of the legacy audit tables",
    "it is scheduled for decommissioning at the end of the quarter",
    "it has a second network card for the payment network",
)
HOST_SHAPES = (
    "Host {host}: {fact}.",
    "Ops note about {host} — {fact}.",
)
HOST_QUESTIONS = (("What should I know about {host}?", "{fact}"), ("Anything special about host {host}?", "{fact}"))

FIRST = ("Oksana", "Daniel", "Mariam", "Kenji", "Fatima", "Erik", "Chloe", "Rahul", "Ines", "Owen", "Leila", "Pavel")
LAST = (
    "Petrenko",
    "Pavlenko",
    "Moreau",
    "Tanaka",
    "Haddad",
    "Johansson",
    "Nguyen",
    "Kapoor",
    "Garcia",
    "Hughes",
    "Rahimi",
    "Novak",
)
CONTACT_ROLES = (
    "vendor manager at Brightline Logistics",
    "our account lead at Stratus Cloud",
    "procurement contact at the city council",
    "head of IT at Fenwick & Co",
    "the auditor from Keel Partners",
    "a freelance translator we use for German",
    "landlord of the Leeds office",
    "partnerships lead at Orbit Media",
)
CONTACT_FACTS = (
    "prefers a phone call on Tuesday mornings to email",
    "is allergic to nuts, so no working lunches with catering",
    "signs off anything over £5,000 only after a second quote",
    "is on leave every August",
    "wants invoices as PDF, never as links",
    "is based in Lisbon, one hour behind London",
    "asked us not to cc their assistant",
    "likes a written agenda two days before any meeting",
)
CONTACT_SHAPES = (
    "{person} ({role}) {fact}.",
    "Contact note: {person}, {role}. Good to know: {first} {fact}.",
)
CONTACT_QUESTIONS = (
    ("What's the best thing to know before contacting {person}?", "{fact}"),
    ("Who is {person}?", "{role}"),
)


def _near_codes(rng: random.Random, count: int) -> list[int]:
    """Four-digit codes, many of them one digit or one swap away from another."""
    codes: list[int] = []
    seen: set[int] = set()
    while len(codes) < count:
        if codes and rng.random() < 0.6:
            base = str(rng.choice(codes))
            digits = list(base)
            if rng.random() < 0.5:
                i = rng.randrange(4)
                digits[i] = str((int(digits[i]) + rng.randrange(1, 10)) % 10)
            else:
                i, j = rng.sample(range(4), 2)
                digits[i], digits[j] = digits[j], digits[i]
            code = int("".join(digits))
        else:
            code = rng.randrange(1000, 10000)
        if code >= 1000 and code not in seen:
            seen.add(code)
            codes.append(code)
    return codes


def build(rng: random.Random) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    memories: list[dict[str, Any]] = []
    candidates: list[tuple[str, dict[str, str], tuple[tuple[str, str], ...]]] = []

    def add(key: str, shape: str, values: dict[str, str], questions: tuple[tuple[str, str], ...]) -> None:
        memories.append(
            {
                "key": key,
                "source": "record",
                "text": shape.format(**values),
                "metadata": {"kind": key.split("-")[0]},
                "created_at": f"2024-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}T10:00:00Z",
            }
        )
        candidates.append((key, values, questions))

    codes = _near_codes(rng, 260)
    if 4711 not in codes:
        codes[0] = 4711
    for i, code in enumerate(codes):
        condition, fix = rng.choice(FAILURES)
        values = {"code": f"ERR-{code}", "component": rng.choice(COMPONENTS), "condition": condition, "fix": fix}
        add(f"err-{i}", rng.choice(ERROR_SHAPES), values, ERROR_QUESTIONS)
    numbers = _near_codes(rng, 300)
    for i, number in enumerate(numbers):
        values = {
            "ticket": f"{rng.choice(PROJECTS)}-{number}",
            "summary": rng.choice(SUMMARIES),
            "person": rng.choice(PEOPLE),
            "status": rng.choice(STATUSES),
            "due": f"{rng.randrange(1, 29)} {rng.choice(MONTHS)}",
        }
        add(f"ticket-{i}", rng.choice(TICKET_SHAPES), values, TICKET_QUESTIONS)
    hosts = sorted({f"{rng.choice(ROLES)}-{rng.choice(REGIONS)}-{rng.randrange(1, 13):02d}" for _ in range(80)})
    for i, host in enumerate(hosts):
        values = {"host": host, "fact": rng.choice(HOST_FACTS)}
        add(f"host-{i}", rng.choice(HOST_SHAPES), values, HOST_QUESTIONS)
    people = sorted({f"{rng.choice(FIRST)} {rng.choice(LAST)}" for _ in range(110)})
    for i, person in enumerate(people):
        values = {
            "person": person,
            "role": rng.choice(CONTACT_ROLES),
            "fact": rng.choice(CONTACT_FACTS),
            "first": person.split()[0],
        }
        add(f"contact-{i}", rng.choice(CONTACT_SHAPES), values, CONTACT_QUESTIONS)

    # Ask about a sample of each kind; an identifier asked about appears in exactly one memory.
    texts_by_id: dict[str, int] = {}
    for _key, values, _ in candidates:
        ident = values.get("code") or values.get("ticket") or values.get("host") or values["person"]
        texts_by_id[ident] = texts_by_id.get(ident, 0) + 1
    questions: list[dict[str, Any]] = []
    per_kind = {"err": 22, "ticket": 22, "host": 10, "contact": 14}
    for kind, wanted in per_kind.items():
        pool = [c for c in candidates if c[0].startswith(kind + "-")]
        if kind == "err":  # the example is always asked
            pool.sort(key=lambda c: c[1]["code"] != "ERR-4711")
            chosen = pool[:1] + rng.sample(pool[1:], wanted - 1)
        else:
            chosen = rng.sample(pool, wanted)
        for key, values, shapes in chosen:
            ident = values.get("code") or values.get("ticket") or values.get("host") or values["person"]
            if texts_by_id[ident] != 1:
                continue
            question, answer = rng.choice(shapes)
            questions.append(
                {
                    "type": "identifier",
                    "question": question.format(**values),
                    "evidence": [key],
                    "answer": answer.format(**values),
                }
            )
    return memories, questions
