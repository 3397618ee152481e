"""Long documents (10-30 KiB) with facts planted past their first 2,000 characters.

Four kinds of document an agent might be asked to remember whole: engineering design docs and postmortems,
project meeting notes, travel journals, and research notes. Each is written from its family's sentence templates
around one subject (a service, a project, a trip, a topic), and one to three specific facts are planted at
paragraph boundaries deep inside. Each fact has a question that names the document's subject and asks about the
fact without repeating its answer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

MIN_BYTES = 10 * 1024
MAX_BYTES = 30 * 1024
PLANT_AFTER = 2_000


@dataclass(frozen=True)
class PlantedFact:
    sentence: str
    question: str
    answer: str


@dataclass(frozen=True)
class Family:
    name: str
    subjects: tuple[str, ...]
    titles: tuple[str, ...]
    sections: tuple[str, ...]
    sentences: tuple[str, ...]
    slots: dict[str, tuple[str, ...]]
    facts: tuple[PlantedFact, ...]
    fact_slots: dict[str, tuple[str, ...]]


GENERIC = (
    "That said, none of this is settled yet, and the next round of feedback may change the picture.",
    "It is worth writing this down now, while the details are still fresh.",
    "The short version is that we know more than we did a month ago, but not enough to stop asking questions.",
    "Several people raised the same point independently, which suggests it deserves more attention.",
    "In hindsight, a few of the early assumptions look optimistic.",
    "This section will probably grow as we learn more.",
    "For now, the plan is to keep things simple and revisit the decision in a few weeks.",
    "There is a longer discussion of this in the appendix, for anyone who wants the details.",
    "Nobody disagreed with the overall direction, only with the pace.",
    "We should be honest that part of this is guesswork.",
)

ENGINEERING = Family(
    "engineering",
    (
        "Harbor billing service",
        "Atlas search cluster",
        "Kestrel notification pipeline",
        "Meridian payments gateway",
        "Tern image service",
        "Quill document store",
    ),
    ("Design review: the {subject}", "Postmortem and follow-ups: the {subject}", "Operating notes for the {subject}"),
    (
        "Background",
        "Goals",
        "Non-goals",
        "Current architecture",
        "Proposed design",
        "Data model",
        "Rollout plan",
        "Monitoring and alerting",
        "Risks",
        "Timeline of the incident",
        "Impact",
        "Follow-up actions",
        "Open questions",
        "Appendix: measurements",
    ),
    (
        "{Component} currently handles roughly {n} requests per second at peak, with {metric} hovering around {ms} ms.",
        "We considered putting {component} behind {component2}, but the extra hop would cost more than it saves.",
        "{Team} owns the alerting for {component}, and any change to its thresholds goes through them.",
        "None of this changes the public API of the {subject}; clients keep calling the same endpoints.",
        "The main risk is that {component} falls behind during a traffic spike and the backlog takes hours to drain.",
        "During the rollout we will watch {metric} closely and pause at the first sign of a regression.",
        "A previous attempt in {year} stalled because the migration scripts could not safely be run twice.",
        "Every step of this plan can be reverted with a single configuration change, which we rehearsed in staging.",
        "Load tests against a replay of production traffic showed {metric} improving by about {pct} percent.",
        "It is worth remembering that {component} was never designed for this volume; it was a prototype that stuck.",
        "{Team} asked for a week of notice before any change that touches {component}.",
        "The dashboards for the {subject} are split across three tools, which makes correlating events slow.",
        "We saw {metric} double for about {minutes} minutes before anyone was paged.",
        "Our synthetic checks passed the whole time, because they only exercise {component}.",
        "The capacity model assumes {pct} percent headroom, which we have not had since {year}.",
        "Retries from the mobile clients amplified the load, since each one waits only {minutes} seconds.",
        "One option is to shard {component} by customer, another is to shard it by region; both have costs.",
        "We keep {n} days of logs for {component}, which was barely enough for this investigation.",
        "Schema changes will be additive only, so old and new versions can run side by side.",
        "The old code path stays in place behind a flag until we have two clean weeks.",
        "{Team} will review the runbook once the new alerts have fired at least once in practice.",
        "Nobody on the current team wrote the original version of {component}, so some behaviour is folklore.",
        "We measured {metric} on three instance types and the cheapest one was within {pct} percent of the best.",
        "The config for {component} lives in two repositories, and they had drifted apart.",
        "There is no evidence that any customer data was lost or exposed.",
        "Write amplification in {component} is the bottleneck, not the network.",
        "We will add a canary stage that takes {pct} percent of traffic for at least an hour.",
        "Support received {n} tickets during the degraded period, most of them about slow page loads.",
        "The queue between {component} and {component2} has no back-pressure, which is the real design flaw.",
        "An on-call engineer restarted {component} twice, which helped for a few minutes each time.",
        "Costs for the {subject} grew {pct} percent last quarter, mostly from storage.",
        "We should document which alerts are actionable and delete the ones that are not.",
    ),
    {
        "component": (
            "the ingest workers",
            "the write queue",
            "the read replicas",
            "the cache tier",
            "the job scheduler",
            "the API gateway",
            "the batch exporter",
            "the auth proxy",
            "the search indexer",
            "the webhook dispatcher",
        ),
        "metric": (
            "p99 latency",
            "the error rate",
            "queue depth",
            "CPU saturation",
            "replication lag",
            "cold-start time",
            "GC pause time",
        ),
        "team": ("the platform team", "SRE", "the data team", "the mobile team", "security", "the payments team"),
        "n": ("40", "120", "850", "1,200", "3,500", "14", "30", "90", "7"),
        "ms": ("35", "120", "480", "900", "15"),
        "pct": ("10", "15", "20", "30", "40", "5"),
        "minutes": ("6", "12", "25", "45"),
        "year": ("2019", "2020", "2021", "2022"),
    },
    (
        PlantedFact(
            "After the last incident we moved the nightly backup window to {time} UTC, because the {region} replicas "
            "lag badly while the batch import runs.",
            "In the {subject} document, what time does the nightly backup run now, and why was it moved?",
            "{time} UTC; the {region} replicas lag during the batch import",
        ),
        PlantedFact(
            "The flag that finally stopped the retry storm was {flag}; rolling it back at {time} UTC brought the "
            "error rate down within minutes.",
            "Which feature flag was rolled back to stop the retry storm in the {subject}?",
            "{flag}",
        ),
        PlantedFact(
            "From now on, pages for the {subject} escalate to {person} rather than the shared on-call rota.",
            "Who do pages for the {subject} escalate to now?",
            "{person}",
        ),
        PlantedFact(
            "We agreed to cap the database connection pool at {pool} connections per pod, since the primary ran out "
            "of slots during the spike.",
            "What connection pool limit per pod was agreed for the {subject}?",
            "{pool} connections per pod",
        ),
        PlantedFact(
            "The vendor's quote for a managed message queue came to {money} a month, which ruled that option out.",
            "How much did the managed message queue vendor quote for the {subject}?",
            "{money} a month",
        ),
        PlantedFact(
            "Records older than {days} days will move to cold storage in the {bucket} bucket.",
            "After how many days is data from the {subject} archived, and where does it go?",
            "after {days} days, to the {bucket} bucket",
        ),
        PlantedFact(
            "The load balancer's health check now calls /healthz with a {seconds}-second timeout instead of /status.",
            "What health check does the load balancer use for the {subject} now?",
            "/healthz with a {seconds}-second timeout",
        ),
        PlantedFact(
            "The underlying cause was {cause}.",
            "What was the underlying cause of the trouble with the {subject}?",
            "{cause}",
        ),
    ),
    {
        "time": ("02:40", "03:15", "04:05", "01:20", "05:30", "14:32", "22:50"),
        "region": ("Frankfurt", "Singapore", "São Paulo", "Virginia", "Dublin", "Sydney"),
        "flag": (
            "enable_async_settlement",
            "use_new_token_cache",
            "fanout_v2",
            "strict_idempotency_keys",
            "prefetch_thumbnails",
            "bulk_reindex_on_write",
        ),
        "person": ("Dana Whitfield", "Rohan Mehta", "Chiara Bellini", "Samuel Osei", "Ingrid Halvorsen", "Wei Zhang"),
        "pool": ("24", "40", "64", "16", "32"),
        "money": ("$18,400", "$9,750", "$31,000", "€12,600", "$22,900"),
        "days": ("45", "90", "180", "30", "365"),
        "bucket": ("glacier-archive-eu", "cold-tier-07", "ltr-backups", "deep-freeze-west", "archive-primary"),
        "seconds": ("2", "3", "5", "8"),
        "cause": (
            "an expired intermediate TLS certificate on one of the internal proxies",
            "a DNS TTL of one week on the failover record",
            "a cron job in a forgotten repository that truncated the staging table in production",
            "clock skew of four minutes on two hosts, which broke token validation",
            "an unbounded IN clause built from a customer's 60,000 saved filters",
            "a kernel upgrade that changed the default TCP keepalive",
        ),
    },
)

MEETINGS = Family(
    "meetings",
    (
        "Project Lighthouse",
        "the Willow website redesign",
        "Operation Bluebird",
        "the Orchard CRM rollout",
        "the Beacon mobile app",
        "the Cobalt data warehouse",
    ),
    ("Steering group notes: {subject}", "Quarterly review: {subject}", "Running minutes for {subject}"),
    (
        "Attendees",
        "Updates from design",
        "Updates from engineering",
        "Marketing and communications",
        "Budget",
        "Risks and issues",
        "Decisions",
        "Action items",
        "Customer feedback",
        "Next steps",
        "Any other business",
    ),
    (
        "{Person} walked through the latest numbers; adoption is up slightly but still below the target set in "
        "{month}.",
        "The group agreed that {subject} needs a clearer owner for each workstream.",
        "{Person} raised concerns about the pace of hiring and asked for an update next week.",
        "Design shared new mock-ups; most feedback was about navigation and the empty states.",
        "Engineering reported that the integration with the {system} is about {pct} percent complete.",
        "There was a long discussion about scope, and the group decided to park two of the smaller requests.",
        "{Person} will follow up with legal about the wording of the consent screen.",
        "Marketing would like at least six weeks' notice before any public announcement.",
        "The vendor missed another deadline, and {Person} will escalate it with their account manager.",
        "Attendance at the training sessions has been lower than hoped, around {n} people per session.",
        "A risk was added to the register about dependency on the {system}.",
        "The team is tired, and {Person} asked that nobody schedule meetings on Friday afternoons.",
        "Feedback from the pilot users was broadly positive, with complaints mostly about speed.",
        "Finance asked for a revised forecast by the end of {month}.",
        "{Person} presented three options for the reporting dashboard; the group preferred the simplest one.",
        "Nobody could say for certain who approved the original timeline, which says something.",
        "The help desk logged {n} questions about {subject} last week, down from the week before.",
        "The group reviewed the risk register and closed four items that no longer apply.",
        "A short demo of the latest build went well, apart from one crash on the settings page.",
        "{Person} noted that the documentation is out of date and volunteered to fix the worst parts.",
        "Several regional managers want to be involved earlier in future decisions.",
        "Procurement needs the final list of licences before {month}.",
        "The next milestone depends on the {system} team, whose priorities have shifted.",
        "It was agreed to send a short written update to all staff every fortnight.",
        "{Person} reminded everyone that the accessibility review is not optional.",
        "The data migration rehearsal found {n} records with missing fields, all now corrected.",
        "There was some frustration that decisions from the last meeting had not been recorded.",
        "Action items from last time were reviewed; most are done, two have slipped.",
        "Usage is highest on Monday mornings and drops sharply after lunch on Fridays.",
        "{Person} will draft a one-page summary for the executive team.",
    ),
    {
        "person": (
            "Amara",
            "Jonas",
            "Beatriz",
            "Callum",
            "Farah",
            "Henrik",
            "Lucia",
            "Nikhil",
            "Olga",
            "Tobias",
            "Yusuf",
            "Zoe",
        ),
        "month": ("January", "March", "April", "June", "September", "October", "November"),
        "system": ("finance system", "HR platform", "single sign-on service", "payroll provider", "booking engine"),
        "pct": ("40", "60", "75", "85", "90"),
        "n": ("12", "18", "25", "37", "60", "140"),
    },
    (
        PlantedFact(
            "The launch date moves to {date} so that the accessibility audit can finish first.",
            "What is the new launch date for {subject}, and why did it move?",
            "{date}; to let the accessibility audit finish",
        ),
        PlantedFact(
            "The contractor budget for the rest of the year is cut to {money}.",
            "How much contractor budget is left for {subject} this year?",
            "{money}",
        ),
        PlantedFact(
            "{newowner} will act as product owner while {oldowner} is on parental leave.",
            "Who will be the product owner of {subject} during the parental leave?",
            "{newowner}, covering for {oldowner}",
        ),
        PlantedFact(
            "The pilot will run in {stores} branches in {region} before any national rollout.",
            "How many branches take part in the pilot of {subject}, and in which region?",
            "{stores} branches in {region}",
        ),
        PlantedFact(
            "The group decided to drop {feature} from the first release.",
            "Which feature was dropped from the first release of {subject}?",
            "{feature}",
        ),
        PlantedFact(
            "The team offsite is booked at {venue} for the second week of {offmonth}.",
            "Where is the team offsite for {subject} being held?",
            "{venue}, second week of {offmonth}",
        ),
        PlantedFact(
            "The customer interviews showed that {finding}.",
            "What did the customer interviews for {subject} reveal?",
            "{finding}",
        ),
    ),
    {
        "date": ("14 March", "2 June", "19 September", "7 November", "28 April"),
        "money": ("£42,000", "£18,500", "$65,000", "€27,000", "£9,800"),
        "newowner": ("Priti Shah", "Gareth Lloyd", "Elif Demir", "Marco Conti", "Ruth Adeyemi"),
        "oldowner": ("Sanne de Vries", "Oliver Park", "Hana Novak", "Kofi Mensah"),
        "stores": ("12", "8", "25", "5", "17"),
        "region": ("the North West", "Scotland", "the Midlands", "Wales", "the South Coast"),
        "feature": ("offline mode", "the loyalty points wallet", "dark mode", "bulk CSV import", "in-app chat"),
        "venue": ("Hawkstone Hall", "a converted mill near Hebden Bridge", "the Glasshouse in Kew", "Coombe Abbey"),
        "offmonth": ("May", "July", "October"),
        "finding": (
            "most users never change the default settings",
            "people print the monthly report and annotate it by hand",
            "the search box is used far more than the menus",
            "nobody understood what the green badge meant",
            "small businesses care more about invoices than dashboards",
        ),
    },
)

TRAVEL = Family(
    "travel",
    (
        "the Japan trip",
        "the Camino Portugués walk",
        "the Patagonia road trip",
        "the Greek island-hopping trip",
        "the month in Mexico City",
        "the Danube cycling tour",
    ),
    ("Travel journal: {Subject}", "Notes from {subject}", "Diary of {subject}"),
    (
        "Getting there",
        "Day one",
        "The first week",
        "Food",
        "People we met",
        "Getting around",
        "Where we stayed",
        "A rainy day",
        "The middle stretch",
        "Things that went wrong",
        "The last few days",
        "Coming home",
    ),
    (
        "We woke up early and walked to the {place} before the crowds arrived.",
        "Breakfast was {food} again, and neither of us complained.",
        "The weather turned {weather} in the afternoon, so we hid in a café and wrote postcards.",
        "Getting around by {transport} was cheaper than we expected, if a little slow.",
        "Everyone we asked for directions went out of their way to help.",
        "My feet hurt, my bag is too heavy, and I am completely happy.",
        "We spent the evening wandering without a plan, which turned out to be the best plan.",
        "The market sold everything from {food} to second-hand radios.",
        "I took far too many photos of the {place}; the light kept changing.",
        "Our host recommended a small place around the corner, and it was excellent.",
        "By the end of the day we had walked more than {km} kilometres.",
        "It rained {weather}, then cleared, then rained again, all within an hour.",
        "We missed one {transport} and waited forty minutes for the next, which gave us time to people-watch.",
        "The view from the {place} made the climb worth it.",
        "I tried {food} for the first time and immediately ordered a second portion.",
        "A street musician played the same three songs all evening, and somehow we didn't mind.",
        "The guidebook was wrong about the opening hours, as usual.",
        "We bought snacks at a petrol station and ate them on a bench overlooking the {place}.",
        "I fell asleep on the {transport} and woke up just in time for our stop.",
        "There are moments on a trip like this when you forget to check the time at all.",
        "We argued briefly about the route and then laughed about it over {food}.",
        "Our room was small but spotless, with a window onto a quiet courtyard.",
        "The locals seemed amused by our attempts at the language.",
        "It was {weather} all morning, perfect for walking.",
        "We kept a running list of the best things we ate; it is already very long.",
        "At the {place} a guide told us stories that were probably only half true.",
        "I wrote in this journal by torchlight because the power went out.",
        "Some days are just for resting, and today was one of them.",
    ),
    {
        "place": (
            "old harbour",
            "hilltop temple",
            "cathedral square",
            "fish market",
            "botanical garden",
            "castle ruins",
            "riverside promenade",
            "lighthouse",
        ),
        "food": (
            "fresh bread and honey",
            "grilled sardines",
            "street tacos",
            "miso soup and rice",
            "a flaky cheese pastry",
            "spicy noodle soup",
            "figs and yoghurt",
        ),
        "weather": ("grey and drizzly", "bright and windy", "sticky and hot", "cold and clear", "foggy"),
        "transport": ("bus", "local train", "ferry", "shared taxi", "bike"),
        "km": ("14", "18", "22", "25", "31"),
    },
    (
        PlantedFact(
            "The guesthouse keeps its spare key under the {pot} by the gate, and the owner only answers the phone "
            "after six.",
            "During {subject}, where was the guesthouse's spare key hidden?",
            "under the {pot} by the gate",
        ),
        PlantedFact(
            "Our ferry actually left at {time}, not at the time printed on the ticket, and we nearly missed it.",
            "What time did the ferry really leave during {subject}?",
            "{time}",
        ),
        PlantedFact(
            "I lost my passport at {lostplace}, and the consulate needed {days} working days to issue an emergency "
            "one.",
            "During {subject}, how long did it take to get an emergency passport?",
            "{days} working days (lost at {lostplace})",
        ),
        PlantedFact(
            "The best meal of the whole trip was {dish}, at a tiny place run by a woman called {cook}.",
            "What was the best meal of {subject}?",
            "{dish}, cooked by {cook}",
        ),
        PlantedFact(
            "The rental car came to {money} in the end, including the extra insurance we were talked into.",
            "How much did the rental car cost in total on {subject}?",
            "{money}",
        ),
        PlantedFact(
            "My sunburn was so bad that we cancelled the boat tour to {island}.",
            "Why did we cancel the boat tour on {subject}?",
            "sunburn; the tour was to {island}",
        ),
    ),
    {
        "pot": ("blue flowerpot", "stone frog", "loose brick", "doormat shaped like a fish", "lemon tree planter"),
        "time": ("06:45", "07:10", "11:20", "16:05", "19:30"),
        "lostplace": ("a laundrette", "the bus station", "a night market", "a museum cloakroom"),
        "days": ("three", "four", "six", "nine"),
        "dish": (
            "slow-cooked lamb with apricots",
            "a bowl of handmade udon with tempura",
            "mole negro with hand-pressed tortillas",
            "grilled octopus with fava purée",
            "river fish baked in salt",
        ),
        "cook": ("Rosa", "Keiko", "Eleni", "Marta", "Dolores"),
        "money": ("€1,140", "$890", "£620", "€2,300", "$1,475"),
        "island": ("the seal colony", "a sea cave", "the bird island", "a lagoon with flamingos"),
    },
)

RESEARCH = Family(
    "research",
    (
        "sleep and memory consolidation",
        "urban heat islands",
        "soil microbes and crop yield",
        "remote work and productivity",
        "coral bleaching recovery",
        "adult language learning",
    ),
    ("Reading notes: {subject}", "Lab notebook: {subject}", "Literature review draft: {subject}"),
    (
        "Motivation",
        "Key papers",
        "Methods",
        "Data sources",
        "Preliminary results",
        "Problems",
        "Ideas to try",
        "Discussion",
        "Limitations",
        "Next steps",
        "References to chase",
    ),
    (
        "Most studies in this area rely on small samples, often fewer than {n} participants, so effect sizes are "
        "shaky.",
        "The review by {author} is the best starting point, although it is now a few years old.",
        "Several papers use {method}, which makes their results hard to compare with ours.",
        "The field seems split on whether the effect is causal or just a correlation with {confound}.",
        "I re-ran the analysis with the outliers removed and the pattern held.",
        "The open dataset from {year} has missing values in almost a third of the rows.",
        "There is a lot of enthusiasm in the popular press that the evidence does not yet support.",
        "A meta-analysis from {year} pooled {n} studies and found a modest average effect.",
        "Measurement is the recurring problem: everyone defines the outcome slightly differently.",
        "I should ask {author}'s group whether they would share their preprocessing scripts.",
        "The pilot data are noisy, but the direction of the effect matches the literature.",
        "Seasonality might explain part of the variation; I need to check the dates.",
        "It would help to pre-register the next analysis before looking at the new data.",
        "Three of the key papers come from the same lab, which is a worry.",
        "Using {method} instead changed the estimate only in the second decimal place.",
        "The theory predicts a threshold effect, but the data look more like a gradual slope.",
        "I keep coming back to the question of what the right control condition is.",
        "Reviewers on the last submission asked for more detail about {confound}.",
        "Today was mostly spent cleaning data, which is most days.",
        "A conversation with {author} at the workshop suggested a cleaner design.",
        "The confidence intervals are wide enough that I would not bet on the sign.",
        "Cost per sample has come down a lot since {year}, which opens up larger studies.",
        "The long-term follow-up data are the most interesting and the hardest to get.",
        "I need to be careful not to over-interpret a single significant result.",
        "Robustness checks with different bandwidths give the same qualitative answer.",
        "Much of the older literature is not available as data, only as summary tables.",
        "A simple plot of the raw data would probably convince people more than any model.",
        "It is not clear that the lab findings translate to real-world settings.",
    ),
    {
        "n": ("20", "30", "45", "60", "120", "300"),
        "author": ("Alvarez", "Nakamura", "Okonkwo", "Lindqvist", "Brennan", "Kowalczyk", "Haddad"),
        "method": ("mixed-effects models", "difference-in-differences", "propensity matching", "Bayesian hierarchies"),
        "confound": ("age", "income", "baseline health", "season", "prior experience"),
        "year": ("2014", "2016", "2018", "2019", "2021"),
    },
    (
        PlantedFact(
            "Sample {sample} was contaminated, so runs {run1} to {run2} have to be thrown away.",
            "Which runs have to be thrown away in the {subject} work, and why?",
            "runs {run1} to {run2}, because sample {sample} was contaminated",
        ),
        PlantedFact(
            "{helper} suggested a {model} instead of a linear model, and it halved the prediction error.",
            "Which model halved the prediction error in the {subject} analysis, and who suggested it?",
            "a {model}, suggested by {helper}",
        ),
        PlantedFact(
            "The dataset we need is held by {org}, and access requires a signed agreement that takes about {weeks} "
            "weeks.",
            "Who holds the data needed for the {subject} project, and how long does access take?",
            "{org}; about {weeks} weeks",
        ),
        PlantedFact(
            "The grant deadline is {deadline}, with a limit of {pages} pages for the case for support.",
            "When is the grant application for {subject} due, and what is the page limit?",
            "{deadline}, {pages} pages",
        ),
        PlantedFact(
            "Our effect size came out at d = {d}, well below the value reported in the original paper.",
            "What effect size did my own analysis of {subject} find?",
            "d = {d}",
        ),
        PlantedFact(
            "The freezer in room {room} failed over the weekend, and we lost the {lost} samples.",
            "What was lost when the freezer failed during the {subject} project?",
            "the {lost} samples, in room {room}",
        ),
    ),
    {
        "sample": ("B-17", "K-04", "R-221", "T-9", "M-36"),
        "run1": ("12", "31", "48", "7"),
        "run2": ("19", "40", "55", "15"),
        "helper": ("Dr Aziz", "Professor Lund", "Mei from the stats unit", "my co-supervisor Paolo"),
        "model": ("gradient-boosted tree", "random forest", "Gaussian process", "spline regression"),
        "org": ("the national statistics office", "the regional health authority", "the met office", "a water utility"),
        "weeks": ("six", "eight", "ten", "twelve"),
        "deadline": ("3 February", "15 May", "30 September", "12 December"),
        "pages": ("six", "eight", "ten"),
        "d": ("0.12", "0.18", "0.21", "0.09"),
        "room": ("B214", "G07", "3.12", "L41"),
        "lost": ("baseline", "week-six", "pilot", "control-group"),
    },
)

FAMILIES = (ENGINEERING, MEETINGS, TRAVEL, RESEARCH)


def _fill(template: str, rng: random.Random, slots: dict[str, tuple[str, ...]], **fixed: str) -> str:
    """Fill {slot} and {Slot} (capitalised) placeholders; each placeholder draws independently."""
    out = template
    # In order of appearance (a set's order changes with the hash seed, and with it the draws).
    names = list(dict.fromkeys(part.split("}", 1)[0] for part in template.split("{")[1:]))
    values: dict[str, str] = {}
    for name in names:
        key = name.lower()
        if key in fixed:
            value = fixed[key]
        else:
            value = rng.choice(slots[key])
            if key == "component2":
                value = rng.choice([c for c in slots["component"] if c != values.get("component")])
        values[name] = value[0].upper() + value[1:] if name[0].isupper() else value
    for name, value in values.items():
        out = out.replace("{" + name + "}", value)
    return out


def _document(
    family: Family, subject: str, number: int, rng: random.Random
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    target = rng.randrange(MIN_BYTES + 512, MAX_BYTES - 1024)
    slots = {**family.slots, "component2": family.slots.get("component", ("",))}
    title = _fill(rng.choice(family.titles), rng, {}, subject=subject)
    pool = list(family.sentences) + list(GENERIC)
    paragraphs: list[str] = []
    size = len(title)
    sections = list(family.sections)
    rng.shuffle(sections)
    section_index = 0
    uses = dict.fromkeys(pool, 0)
    while size < target:
        if not paragraphs or rng.random() < 0.25:
            heading = sections[section_index % len(sections)]
            if section_index >= len(sections):
                heading += f" (part {section_index // len(sections) + 1})"
            section_index += 1
            paragraphs.append(f"## {heading}")
        sentences = []
        for _ in range(rng.randrange(3, 7)):
            # The least used templates first: each one comes back as rarely, and as far apart, as the length allows.
            fewest = min(uses.values())
            template = rng.choice([t for t in pool if uses[t] == fewest])
            uses[template] += 1
            sentences.append(_fill(template, rng, slots, subject=subject))
        paragraph = " ".join(sentences)
        paragraphs.append(paragraph)
        size += len(paragraph) + 2
    # Plant 1-3 facts at paragraph boundaries past PLANT_AFTER characters, spread over the document.
    count = rng.choice((1, 2, 2, 3))
    chosen = rng.sample(family.facts, count)
    offsets = _paragraph_starts(title, paragraphs)
    deep = [i for i, start in enumerate(offsets) if start > PLANT_AFTER and not paragraphs[i].startswith("## ")]
    spots = sorted(rng.sample(deep, count))
    planted: list[tuple[int, PlantedFact, dict[str, str]]] = []
    for spot, fact in zip(reversed(spots), reversed(chosen), strict=True):
        values = {key: rng.choice(options) for key, options in family.fact_slots.items()}
        values["subject"] = subject
        sentence = _fill(fact.sentence, rng, {}, **values)
        paragraphs[spot] = paragraphs[spot] + " " + sentence
        planted.append((spot, fact, values))
    text = title + "\n\n" + "\n\n".join(paragraphs)
    # Trim whole paragraphs from the end (never a planted one) until the text fits.
    planted_spots = {spot for spot, _, _ in planted}
    while len(text.encode("utf-8")) > MAX_BYTES:
        last = len(paragraphs) - 1
        if last in planted_spots:
            raise RuntimeError(f"document {number} cannot be trimmed without losing a fact")
        paragraphs.pop()
        text = title + "\n\n" + "\n\n".join(paragraphs)
    key = f"doc{number:02d}"
    questions = []
    for _spot, fact, values in sorted(planted, key=lambda p: p[0]):
        sentence = _fill(fact.sentence, rng, {}, **values)
        start = text.index(sentence)
        questions.append(
            {
                "type": "long-doc",
                "question": _fill(fact.question, rng, {}, **values),
                "evidence": [key],
                "answer": _fill(fact.answer, rng, {}, **values),
                "span": [start, start + len(sentence)],
            }
        )
    memory = {
        "key": key,
        "source": "document",
        "text": text,
        "metadata": {"kind": family.name, "title": title},
        "created_at": f"2024-0{1 + number % 9}-{10 + number % 18:02d}T09:00:00Z",
    }
    return memory, questions


def _paragraph_starts(title: str, paragraphs: list[str]) -> list[int]:
    starts = []
    position = len(title) + 2
    for paragraph in paragraphs:
        starts.append(position)
        position += len(paragraph) + 2
    return starts


def build(rng: random.Random) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    memories: list[dict[str, Any]] = []
    questions: list[dict[str, Any]] = []
    number = 0
    for family in FAMILIES:
        for subject in family.subjects:
            number += 1
            memory, asked = _document(family, subject, number, rng)
            memories.append(memory)
            questions.extend(asked)
    return memories, questions
