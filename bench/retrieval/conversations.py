"""Multi-session conversations between two friends, stored one turn per memory, with questions on specific turns.

Each person has life events ("facts") told in one turn of one session; the rest of a session is small talk. The
questions are single-hop (one fact turn), multi-hop (two turns: two events of the same kind, or a relative
introduced in one session and their news in a later one) and temporal (when something happened, which came first,
how long between two events; the session date is at the start of every turn, as an agent would store it).
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from typing import Any

# -- people ------------------------------------------------------------------------------------------------------

PAIRS = (
    ("Maya", "Leo"),
    ("Priya", "Tomasz"),
    ("Grace", "Idris"),
    ("Sofia", "Kwame"),
    ("Hannah", "Mateo"),
    ("Aiko", "Ruben"),
)


@dataclass(frozen=True)
class FactType:
    """One kind of life event. Slot names joined by '|' are chosen together (values joined by '|' too)."""

    key: str
    slots: dict[str, tuple[str, ...]]
    say: tuple[str, ...]  # the owner's turn; {slot} placeholders
    reply: tuple[str, ...]  # the friend's answer (not evidence)
    ask: tuple[str, ...]  # single-hop questions; {name} is the owner
    when: str  # temporal question
    event: str  # a gerund phrase for ordering questions
    answer: str
    plural: str | None = None  # multi-hop question over two events of this kind


FACTS: tuple[FactType, ...] = (
    FactType(
        "pet",
        {
            "animal": (
                "greyhound",
                "beagle",
                "tabby cat",
                "border collie",
                "lop-eared rabbit",
                "corgi",
                "Maine Coon",
                "dachshund",
                "cockatiel",
                "Siamese cat",
                "whippet",
                "ginger kitten",
            ),
            "petname": (
                "Biscuit",
                "Juniper",
                "Pickles",
                "Otis",
                "Mochi",
                "Pepper",
                "Waffles",
                "Clementine",
                "Ziggy",
                "Hazel",
                "Nugget",
                "Bramble",
                "Figaro",
                "Luna",
            ),
        },
        (
            "We finally adopted a {animal} from the shelter last weekend. We called it {petname} and it already owns "
            "the sofa.",
            "Big news: there's a {animal} living with me now! I named it {petname}; it was the shyest one at the "
            "rescue.",
            "I brought {petname} home on Saturday, a {animal} that had been waiting at the rescue for months. The flat "
            "feels completely different.",
        ),
        (
            "Aww, congratulations! Send me pictures as soon as you can.",
            "That's such a lovely name. How are the first nights going?",
            "Rescue animals are the best. You'll never want to go back.",
        ),
        (
            "What did {name} name the {animal} from the rescue?",
            "What kind of animal did {name} adopt and call {petname}?",
        ),
        "When did {name} adopt {petname}?",
        "adopting {petname}",
        "{petname}, a {animal}",
        "Which animals has {name} adopted?",
    ),
    FactType(
        "job",
        {
            "company|role": (
                "Northwind Analytics|data analyst",
                "Harbourline Shipping|logistics planner",
                "Coppervale Health|nurse educator",
                "Bluefin Robotics|firmware engineer",
                "Tessellate Games|level designer",
                "Greenleaf Grocers|regional buyer",
                "Quarry Lane Architects|junior architect",
                "Solstice Energy|grid analyst",
                "Marigold Publishing|copy editor",
                "Ironbridge Bank|risk analyst",
                "Fernhill Primary School|music teacher",
                "Lumen Dental|practice manager",
            ),
        },
        (
            "I accepted the offer from {company}! I'll be their new {role}, starting on the first of next month.",
            "So, I have news: I signed the contract with {company} yesterday. {role} is the title, and the team seems "
            "great.",
            "After four interviews {company} finally said yes. I'm going to be a {role} there, which is a bit scary.",
        ),
        (
            "That's huge, congratulations! You've worked so hard for this.",
            "Amazing! We have to celebrate properly.",
            "Scary in a good way though. You'll be brilliant.",
        ),
        ("Which company hired {name} as a {role}?", "What position did {name} accept at {company}?"),
        "When did {name} accept the job at {company}?",
        "accepting the job at {company}",
        "{role} at {company}",
    ),
    FactType(
        "trip",
        {
            "place|highlight": (
                "Lisbon|the tram ride up to the castle at sunset",
                "the Isle of Skye|a wild swim in the Fairy Pools",
                "Kyoto|a tea ceremony in a tiny house near Gion",
                "Reykjavik|watching the northern lights from a lava field",
                "Marrakech|getting lost in the souks for a whole afternoon",
                "Vancouver Island|kayaking next to a pod of orcas",
                "the Dolomites|a via ferrata route above Cortina",
                "Oaxaca|a mole cooking class with a local grandmother",
                "Tallinn|the old town walls covered in snow",
                "Hoi An|having a suit made in twenty-four hours",
                "the Lofoten Islands|a midnight hike under the sun",
                "Cape Town|the cable car up Table Mountain",
            ),
        },
        (
            "We just got back from {place}. The best part was definitely {highlight}.",
            "I'm still jet-lagged from {place}, but it was worth it. Nothing beats {highlight}.",
            "{place} was everything I hoped for. If I had to pick one moment, it would be {highlight}.",
        ),
        (
            "I'm so jealous. I need to see your photos!",
            "That sounds like a dream trip. Was the food good too?",
            "Welcome back! Did you manage to relax at all?",
        ),
        (
            "What was the highlight of {name}'s trip to {place}?",
            "Where did {name} go when the best moment was {highlight}?",
        ),
        "When did {name} come back from {place}?",
        "the trip to {place}",
        "{place}; highlight: {highlight}",
        "Which places has {name} travelled to?",
    ),
    FactType(
        "class",
        {
            "hobby": (
                "pottery",
                "salsa",
                "life drawing",
                "bouldering",
                "Mandarin",
                "woodworking",
                "stand-up comedy",
                "watercolour",
                "ceramics glazing",
                "sourdough baking",
                "stand-up paddleboarding",
                "jazz piano",
            ),
            "weekday": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday"),
        },
        (
            "I signed up for a {hobby} class on {weekday} evenings at the community centre. First session was a "
            "glorious mess.",
            "Guess who's doing {hobby} now? Every {weekday} after work. I'm terrible and I love it.",
            "My {weekday} evenings are officially taken: I joined a beginners' {hobby} course with a coworker.",
        ),
        (
            "Ha, I love that. You have to show me what you make.",
            "Good for you, it's so nice to have something just for yourself.",
            "I've always wanted to try that. Is the teacher any good?",
        ),
        ("What class does {name} take on {weekday} evenings?", "Which evening of the week is {name}'s {hobby} class?"),
        "When did {name} start the {hobby} class?",
        "starting {hobby} classes",
        "{hobby} on {weekday} evenings",
        "Which classes has {name} signed up for?",
    ),
    FactType(
        "race",
        {
            "race": (
                "Berlin half marathon",
                "Great North Run",
                "Brooklyn 10K",
                "Lake Geneva half",
                "Edinburgh marathon",
                "Copenhagen half marathon",
                "Bay to Breakers",
                "Dublin 10-miler",
                "Vienna city run",
                "Porto night 10K",
            ),
            "finish": (
                "1:52:10",
                "2:04:45",
                "48:31",
                "1:47:58",
                "3:58:02",
                "55:12",
                "1:39:40",
                "4:12:30",
                "1:21:05",
                "51:49",
            ),
        },
        (
            "I ran the {race} on Sunday and finished in {finish}! My legs are still furious with me.",
            "Official result from the {race}: {finish}. A personal best, and I didn't even throw up this time.",
            "The {race} is done. {finish} on the clock, and I walked exactly zero of it.",
        ),
        (
            "Whoa, that's a seriously good time. Congrats!",
            "You're a machine. Rest those legs.",
            "So proud of you. Are you already planning the next one?",
        ),
        ("What was {name}'s finishing time in the {race}?", "Which race did {name} finish in {finish}?"),
        "When did {name} run the {race}?",
        "running the {race}",
        "{race} in {finish}",
        "Which races has {name} run?",
    ),
    FactType(
        "book",
        {
            "book|author": (
                "The Overstory|Richard Powers",
                "Piranesi|Susanna Clarke",
                "A Gentleman in Moscow|Amor Towles",
                "The Remains of the Day|Kazuo Ishiguro",
                "Braiding Sweetgrass|Robin Wall Kimmerer",
                "Station Eleven|Emily St. John Mandel",
                "The Dispossessed|Ursula K. Le Guin",
                "Pachinko|Min Jin Lee",
                "Middlemarch|George Eliot",
                "The Left Hand of Darkness|Ursula K. Le Guin",
                "Homegoing|Yaa Gyasi",
                "Never Let Me Go|Kazuo Ishiguro",
            ),
        },
        (
            "I'm halfway through {book} by {author} and I keep missing my bus stop because of it.",
            "Have you read {book}? {author} is ruining my sleep schedule, I can't put it down.",
            "I finally started {book} after you mentioned {author} months ago. You were right.",
        ),
        (
            "Isn't it wonderful? Tell me when you reach the ending.",
            "Adding it to my list right now.",
            "I've heard so much about that one.",
        ),
        ("Which book by {author} was {name} reading?", "Who wrote the book {name} couldn't put down, {book}?"),
        "When did {name} mention reading {book}?",
        "reading {book}",
        "{book} by {author}",
        "Which books has {name} been reading?",
    ),
    FactType(
        "concert",
        {
            "band|venue": (
                "Khruangbin|the Roundhouse",
                "Arooj Aftab|the Barbican",
                "Fleet Foxes|Red Rocks",
                "Little Simz|Brixton Academy",
                "Bon Iver|the Hollywood Bowl",
                "Snarky Puppy|Paradiso",
                "Phoebe Bridgers|the Apollo",
                "Hiatus Kaiyote|Vicar Street",
                "Nils Frahm|the Elbphilharmonie",
                "Tinariwen|the Union Chapel",
            ),
        },
        (
            "Last night I saw {band} at {venue}. I'm still buzzing, the encore was twenty minutes long.",
            "I finally got to see {band} live, at {venue} of all places. Best gig of my life, no contest.",
            "We went to the {band} show at {venue}. My ears are ringing but it was magic.",
        ),
        (
            "No way, I'm so jealous!",
            "That venue is incredible for sound. Good choice.",
            "Did they play the new songs?",
        ),
        ("Where did {name} see {band} play?", "Which band did {name} see at {venue}?"),
        "When did {name} see {band} live?",
        "seeing {band} at {venue}",
        "{band} at {venue}",
        "Which bands has {name} seen live?",
    ),
    FactType(
        "cooking",
        {
            "dish|occasion": (
                "a whole roast duck with cherry sauce|my parents' anniversary",
                "Hainanese chicken rice|a housewarming",
                "three kinds of dumplings|Lunar New Year",
                "beef bourguignon|my sister's birthday",
                "a vegan lasagne|our book club",
                "a seafood paella|a garden party",
                "jollof rice|a work potluck",
                "a lemon meringue pie|Sunday lunch with the neighbours",
                "homemade ramen with twelve-hour broth|a games night",
                "a Persian jewelled rice|my cousin's engagement",
            ),
        },
        (
            "I cooked {dish} for {occasion}. It took all day but nobody left a crumb.",
            "Proud moment: {dish}, from scratch, for {occasion}. The kitchen looked like a crime scene afterwards.",
            "For {occasion} I attempted {dish}. It actually worked!",
        ),
        (
            "You have to teach me that recipe.",
            "I'd have paid money to be at that table.",
            "That sounds like a labour of love.",
        ),
        ("What did {name} cook for {occasion}?", "For which occasion did {name} make {dish}?"),
        "When did {name} cook for {occasion}?",
        "cooking for {occasion}",
        "{dish} for {occasion}",
        "Which dishes has {name} cooked for guests?",
    ),
    FactType(
        "instrument",
        {
            "instrument|teacher": (
                "cello|Mrs Okafor",
                "ukulele|a guy called Dmitri",
                "trumpet|my old school's band leader",
                "banjo|a retired bluegrass player named Earl",
                "violin|a conservatory student, Ines",
                "drum kit|Marcus from the music shop",
                "flute|Ms Haddad",
                "harmonica|an online teacher in Memphis",
                "accordion|a lovely Polish man, Mr Nowak",
                "saxophone|Deborah, who plays in a jazz trio",
            ),
        },
        (
            "I bought a second-hand {instrument} and started lessons with {teacher}. My neighbours are being very "
            "patient.",
            "New obsession: the {instrument}. I have lessons with {teacher} every other week.",
            "Don't laugh, but I'm learning the {instrument}. {teacher} says I have decent rhythm.",
        ),
        (
            "Ha, I'm not laughing! That's great.",
            "Will you play something for me next time?",
            "Your poor neighbours, but good for you.",
        ),
        ("Which instrument is {name} taking lessons on with {teacher}?", "Who teaches {name} the {instrument}?"),
        "When did {name} start learning the {instrument}?",
        "starting {instrument} lessons",
        "the {instrument}, taught by {teacher}",
        "Which instruments is {name} learning?",
    ),
    FactType(
        "injury",
        {
            "injury|activity": (
                "sprained my left ankle|playing five-a-side football",
                "pulled a muscle in my back|moving a sofa up three flights of stairs",
                "broke my wrist|ice skating with my niece",
                "twisted my knee|on a trail run",
                "cracked a rib|falling off my bike on the canal path",
                "tore a calf muscle|sprinting for a train",
                "dislocated a finger|at volleyball",
                "hurt my shoulder|at the climbing wall",
            ),
        },
        (
            "Bad news: I {injury} {activity}. Six weeks of taking it easy, apparently.",
            "So I {injury} {activity}. The doctor was trying very hard not to laugh.",
            "I'm on the sofa with ice, because I {injury} {activity}.",
        ),
        (
            "Oh no! Do you need anything? I can bring soup.",
            "Ouch. Please actually rest this time.",
            "That's awful, I'm sorry. Heal fast!",
        ),
        ("How did {name} get injured?", "What injury did {name} get {activity}?"),
        "When did {name} get hurt {activity}?",
        "getting injured {activity}",
        "{injury} {activity}",
    ),
    FactType(
        "home",
        {
            "room|change": (
                "kitchen|painted the cabinets a deep forest green",
                "bathroom|retiled the whole floor in black and white",
                "spare room|turned it into a tiny recording studio",
                "balcony|built raised beds for tomatoes and herbs",
                "living room|knocked through to the dining room",
                "hallway|put up floor-to-ceiling bookshelves",
                "bedroom|installed blackout blinds and a ceiling fan",
                "garden shed|converted it into a pottery studio",
            ),
        },
        (
            "We spent the whole weekend on the {room}: we {change}. My arms are dead.",
            "The {room} project is finished! We {change}, and I keep walking in just to look at it.",
            "Renovation update: in the {room} we {change}. Only took three times longer than planned.",
        ),
        (
            "That sounds gorgeous, I need a tour.",
            "You two are so handy. I can barely hang a picture.",
            "Worth every sore muscle, I bet.",
        ),
        ("What did {name} do to the {room}?", "Which part of the house did {name} renovate, and how?"),
        "When did {name} finish the {room} project?",
        "redoing the {room}",
        "the {room}: {change}",
    ),
    FactType(
        "volunteer",
        {
            "place|task": (
                "the food bank on Carver Street|sorting donations",
                "an animal shelter|walking the older dogs",
                "the city library|running a homework club",
                "a community garden|building compost bays",
                "the hospice|reading to patients",
                "a refugee centre|teaching English conversation",
                "the riverside clean-up group|pulling trash out of the water",
                "a repair café|fixing toasters and lamps",
            ),
        },
        (
            "I've started volunteering at {place} on Saturday mornings, mostly {task}. It's the best part of my week.",
            "Every Saturday now I'm at {place}, {task}. It really puts things in perspective.",
            "I finally did it: I signed up to volunteer at {place}. This week I was {task}.",
        ),
        (
            "That's really lovely of you.",
            "I should come along one weekend.",
            "I bet they're lucky to have you.",
        ),
        ("Where does {name} volunteer on Saturdays?", "What does {name} do as a volunteer at {place}?"),
        "When did {name} start volunteering at {place}?",
        "starting to volunteer at {place}",
        "{place}, {task}",
    ),
    FactType(
        "car",
        {
            "car|colour": (
                "2014 Volvo estate|dark blue",
                "tiny Fiat Panda|mint green",
                "used Toyota Prius|silver",
                "1998 Land Rover Defender|sand-coloured",
                "second-hand Nissan Leaf|white",
                "Mazda MX-5|bright red",
                "VW camper van|cream and orange",
                "Honda Jazz|burgundy",
            ),
        },
        (
            "I bought a car! A {car}, {colour}, with only one mysterious dent.",
            "Meet the newest member of the family: a {colour} {car}. I've already named it.",
            "After months of browsing I picked up a {car} in {colour}. Road trip soon?",
        ),
        (
            "Road trip, absolutely yes.",
            "Congrats! Freedom at last.",
            "Ha, I love a car with a name.",
        ),
        ("What car did {name} buy?", "What colour is the {car} {name} bought?"),
        "When did {name} buy the {car}?",
        "buying the {car}",
        "a {colour} {car}",
    ),
    FactType(
        "exam",
        {
            "exam": (
                "the AWS solutions architect exam",
                "my driving test",
                "the CPA licensing exam",
                "the B2 German exam",
                "my yoga teacher certification",
                "the PMP certification",
                "the advanced open water diving course",
                "my first aid instructor assessment",
            ),
            "score": (
                "on the first try",
                "with 92 percent",
                "by two points",
                "with distinction",
                "after two attempts",
            ),
        },
        (
            "I passed {exam} {score}! I'm going to sleep for a week.",
            "Results are in: I passed {exam} {score}. All those early mornings paid off.",
            "Good news for once: {exam}, passed {score}.",
        ),
        (
            "Brilliant, I knew you would!",
            "Huge congratulations, that's a big one.",
            "Time to celebrate properly.",
        ),
        ("What exam did {name} pass {score}?", "How did {name} do in {exam}?"),
        "When did {name} pass {exam}?",
        "passing {exam}",
        "{exam}, {score}",
        "Which exams or certifications has {name} passed?",
    ),
    FactType(
        "move",
        {
            "area|reason": (
                "a flat above a bakery in Kentish Town|it's ten minutes from work",
                "a terraced house in Leith|we wanted a garden",
                "a studio near the harbour|I can finally walk to the sea",
                "a cottage outside Bath|city rent got ridiculous",
                "an apartment in the old tram depot|the light is amazing",
                "a houseboat on the canal|I always wanted to try it",
                "my grandmother's old house in Galway|the family needed someone there",
                "a loft in the Northern Quarter|my commute was killing me",
            ),
        },
        (
            "We got the keys! We're moving to {area}, mainly because {reason}.",
            "It's official, I'm leaving the old place for {area}. Honestly, {reason}.",
            "Big change: I signed the lease for {area}. The deciding factor: {reason}.",
        ),
        (
            "Exciting! Do you need help with boxes?",
            "That sounds perfect for you.",
            "I'll bring a plant for the housewarming.",
        ),
        ("Where is {name} moving to?", "Why did {name} choose {area}?"),
        "When did {name} get the keys to {area}?",
        "moving to {area}",
        "{area}, because {reason}",
    ),
)

RELATIVE_INTRO = (
    "My {relation} {relname} just moved to {city} for {why}. I'm already planning a visit.",
    "Did I tell you {relname}, my {relation}, is in {city} now? {pronoun_subj_cap} went for {why}.",
)
RELATIVES = (
    "sister|her|she",
    "brother|him|he",
    "cousin|them|they",
    "stepbrother|him|he",
    "aunt|her|she",
    "nephew|him|he",
)
RELATIVE_NAMES = ("Lena", "Tariq", "Noor", "Felix", "Yara", "Bastian", "Odile", "Jonah", "Imani", "Rafael", "Saoirse")
CITIES = ("Montreal", "Melbourne", "Copenhagen", "Nairobi", "Seoul", "Buenos Aires", "Edinburgh", "Lyon", "Porto")
WHYS = (
    "a residency at the children's hospital",
    "a PhD in marine biology",
    "a job at a wind-farm startup",
    "culinary school",
    "a two-year teaching contract",
    "an architecture internship",
)
RELATIVE_NEWS = (
    "{relname} called last night: {pronoun_subj} got engaged on a ferry!",
    "Remember {relname}? {pronoun_subj_cap} {be} opening a little bakery with two friends.",
    "{relname} just told us {pronoun_subj} {be} expecting twins in the spring.",
    "{relname} won a regional award for a community project.",
    "Update on {relname}: {pronoun_subj} adopted two retired racing greyhounds.",
    "{relname} is running for the city council, of all things.",
)
RELATIVE_NEWS_ANSWERS = (
    "got engaged on a ferry",
    "is opening a bakery",
    "is expecting twins",
    "won a regional award",
    "adopted two retired greyhounds",
    "is running for city council",
)

# (opening line, fitting answers)
GREETINGS = (
    (
        "Hey {other}! It's been ages, how are you doing?",
        ("Hey! Good to hear from you. Busy, but good.", "Ages indeed! I'm fine, tired but fine."),
    ),
    ("Morning! Do you have five minutes to catch up?", ("Always! Tell me everything.", "Sure, coffee in hand. Go!")),
    (
        "Hi {other}, I was just thinking about you.",
        ("Ha, good thoughts I hope! How are you?", "Funny, I was about to text you."),
    ),
    ("There you are! How was your week?", ("Long. Yours?", "Honestly not bad. What's new with you?")),
    (
        "{other}! Finally, I've been meaning to message you for days.",
        ("Same here! Let's catch up properly.", "I know, life keeps getting in the way."),
    ),
    (
        "Hey, sorry I went quiet, things have been hectic.",
        ("No worries at all. How are things?", "Don't apologise! What's been going on?"),
    ),
)
# (small talk, its mood): answers are drawn from the pool for that mood
SMALL_TALK = (
    ("Work has been a blur this week, back-to-back meetings since Monday.", "bad"),
    ("Did you end up watching {show}? I'm two episodes in and hooked.", "good"),
    ("It's been raining nonstop here. I've forgotten what the sun looks like.", "bad"),
    ("I tried that {cuisine} place near the station, the one with the blue door. Really good.", "good"),
    ("Honestly, I just want a quiet weekend with nothing planned.", "neutral"),
    ("My phone screen cracked again, third time this year.", "bad"),
    ("I've been trying to go to bed before midnight. It's not going well.", "funny"),
    ("The heating in our building broke, so I'm typing this in two jumpers.", "bad"),
    ("Have you heard the new {artist} album? It's been on repeat.", "good"),
    ("I spent all of Sunday doing laundry and meal prep. Very glamorous.", "funny"),
    ("My manager scheduled a meeting about meetings. I wish I was joking.", "funny"),
    ("I finally cleaned out the fridge. Found things I can't identify.", "funny"),
    ("The trains were cancelled again this morning, so I worked from home.", "bad"),
    ("I've been getting into podcasts about {podcast} lately.", "good"),
    ("We had a power cut last night and played cards by candlelight.", "neutral"),
    ("I keep meaning to call my parents more often.", "neutral"),
    ("Our team got a new coffee machine and productivity has tripled.", "funny"),
    ("I've decided I'm going to drink more water. Day three and counting.", "funny"),
    ("There's a fox that visits our garden every evening now.", "good"),
    ("I'm thinking of getting a haircut but I can't decide how short.", "neutral"),
    ("It's been so hot that I've been sleeping with a wet towel.", "bad"),
    ("I binged the whole season of {show} in two nights. No regrets.", "good"),
    ("The neighbours are renovating and the drilling starts at seven.", "bad"),
    ("I made a spreadsheet for my budget and immediately ignored it.", "funny"),
)
SMALL_TALK_REPLIES = {
    "good": (
        "Oh, I've heard good things about that.",
        "I need to try that.",
        "Ooh, nice.",
        "Okay, that's going on my list.",
        "Love that for you.",
    ),
    "bad": (
        "That sounds exhausting. Be kind to yourself.",
        "Ugh, I know the feeling.",
        "Oh no. Hang in there.",
        "That's rough, I'm sorry.",
        "Nightmare. I hope it gets sorted soon.",
    ),
    "funny": ("Ha, same here.", "Ha! Classic.", "That made me laugh.", "Honestly, relatable.", "You're hilarious."),
    "neutral": ("Fair enough, honestly.", "Tell me about it.", "I hear you.", "Makes sense.", "Hmm, yeah."),
}
ALL_REPLIES = tuple(reply for replies in SMALL_TALK_REPLIES.values() for reply in replies)
FOLLOW_UPS = (
    "Yeah, it still feels a bit unreal.",
    "Thanks! I'll tell you more next time.",
    "I know, I'm still processing it.",
    "It's been a wild few weeks.",
)
CLOSINGS = (
    "I should run, but talk soon!",
    "Okay, dinner's ready. Speak this weekend?",
    "Let's do this again soon. Take care!",
    "Right, back to work for me. Bye!",
)
SHOWS = ("Severance", "The Bear", "Slow Horses", "Shogun", "Only Murders in the Building", "Dark", "Fleabag")
CUISINES = ("Georgian", "Sichuan", "Ethiopian", "Peruvian", "Lebanese", "Korean")
ARTISTS = ("Caroline Polachek", "Arlo Parks", "Mdou Moctar", "Bicep", "Weyes Blood")
PODCASTS = ("ancient history", "unsolved mysteries", "urban planning", "the history of food", "space exploration")

SESSIONS = 8


@dataclass
class Fact:
    owner: str
    kind: FactType
    values: dict[str, str]
    session: int = 0
    key: str = ""  # the memory key of its turn, once placed
    date: dt.date | None = None

    def fill(self, template: str, **extra: str) -> str:
        return template.format(name=self.owner, **self.values, **extra)


@dataclass
class Conversation:
    number: int
    people: tuple[str, str]
    start: dt.date
    dates: list[dt.date] = field(default_factory=list)


def _choose(kind: FactType, rng: random.Random, taken: set[str]) -> dict[str, str]:
    """Slot values for one fact; `taken` keeps a person's two events of one kind different."""
    for _ in range(100):
        values: dict[str, str] = {}
        for slot, options in kind.slots.items():
            picked = rng.choice(options)
            values.update(zip(slot.split("|"), picked.split("|"), strict=True))
        if values[next(iter(values))] not in taken:
            taken.add(values[next(iter(values))])
            return values
    raise RuntimeError(f"ran out of values for {kind.key}")


def _human_date(day: dt.date) -> str:
    return f"{day.day} {day.strftime('%B %Y')}"


def build(rng: random.Random) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(memories, questions) for every conversation."""
    memories: list[dict[str, Any]] = []
    questions: list[dict[str, Any]] = []
    aggregatable = [k for k in FACTS if k.plural]
    for number, people in enumerate(PAIRS, 1):
        start = dt.date(2023, 1, 9) + dt.timedelta(days=rng.randrange(0, 200))
        dates = [start]
        for _ in range(SESSIONS - 1):
            dates.append(dates[-1] + dt.timedelta(days=rng.randrange(6, 35)))
        facts: list[Fact] = []
        plans: list[dict[str, Any]] = []  # questions to write once the turns are placed
        for owner in people:
            kinds = list(FACTS)
            rng.shuffle(kinds)
            pairs = [k for k in aggregatable if k in kinds[:6]][:2]
            if len(pairs) < 2:
                pairs = rng.sample(aggregatable, 2)
            singles = [k for k in kinds if k not in pairs][:8]
            for kind in pairs:  # two events of one kind, in an early and a late session
                taken: set[str] = set()
                first = Fact(owner, kind, _choose(kind, rng, taken), session=rng.randrange(0, 4))
                second = Fact(owner, kind, _choose(kind, rng, taken), session=rng.randrange(4, SESSIONS))
                facts += [first, second]
                plans.append({"type": "multi-hop", "kind": "plural", "facts": [first, second]})
            sessions = rng.sample(range(SESSIONS), len(singles))
            single_facts = []
            for kind, session in zip(singles, sessions, strict=True):
                taken = set()
                fact = Fact(owner, kind, _choose(kind, rng, taken), session=session)
                facts.append(fact)
                single_facts.append(fact)
                plans.append({"type": "single-hop", "facts": [fact]})
                if rng.random() < 0.4:
                    plans.append({"type": "temporal", "kind": "when", "facts": [fact]})
            # a relative introduced early, with news later
            relation, pronoun_obj, pronoun_subj = rng.choice(RELATIVES).split("|")
            relative = {
                "relation": relation,
                "relname": rng.choice(RELATIVE_NAMES),
                "city": rng.choice(CITIES),
                "why": rng.choice(WHYS),
                "pronoun_obj": pronoun_obj,
                "pronoun_subj": pronoun_subj,
                "pronoun_subj_cap": pronoun_subj.capitalize(),
                "be": "are" if pronoun_subj == "they" else "is",
            }
            news_index = rng.randrange(len(RELATIVE_NEWS))
            intro = Fact(owner, _RELATIVE_KIND, relative, session=rng.randrange(0, 3))
            news = Fact(
                owner,
                _RELATIVE_NEWS_KIND,
                {**relative, "news": str(news_index)},
                session=rng.randrange(4, SESSIONS),
            )
            facts += [intro, news]
            plans.append({"type": "multi-hop", "kind": "relative", "facts": [intro, news]})
            # ordering questions over two single events in different sessions
            a, b = rng.sample(single_facts, 2)
            while a.session == b.session:
                a, b = rng.sample(single_facts, 2)
            plans.append({"type": "temporal", "kind": rng.choice(("order", "gap")), "facts": [a, b]})
        turns = _place(number, people, dates, facts, rng)
        for key, text, speaker, session, position in turns:
            day = dates[session]
            memories.append(
                {
                    "key": key,
                    "source": "conversation",
                    "text": f"[{_human_date(day)}] {speaker}: {text}",
                    "metadata": {
                        "conversation": number,
                        "session": session + 1,
                        "date": day.isoformat(),
                        "speaker": speaker,
                    },
                    "created_at": f"{day.isoformat()}T19:{position % 60:02d}:00Z",
                }
            )
        for plan in plans:
            questions.append(_question(plan, rng))
    return memories, questions


# The relative's two turns use the same machinery as facts.
_RELATIVE_KIND = FactType("relative", {}, RELATIVE_INTRO, (), (), "", "", "")
_RELATIVE_NEWS_KIND = FactType("relative-news", {}, RELATIVE_NEWS, (), (), "", "", "")


def _fact_text(fact: Fact, rng: random.Random) -> str:
    if fact.kind is _RELATIVE_NEWS_KIND:
        template = RELATIVE_NEWS[int(fact.values["news"])]
    else:
        template = rng.choice(fact.kind.say)
    text = fact.fill(template)
    return text[0].upper() + text[1:]


def _place(
    number: int, people: tuple[str, str], dates: list[dt.date], facts: list[Fact], rng: random.Random
) -> list[tuple[str, str, str, int, int]]:
    """Every turn of every session: (key, utterance, speaker, session, position)."""
    turns: list[tuple[str, str, str, int, int]] = []
    for session in range(len(dates)):
        here = [f for f in facts if f.session == session]
        rng.shuffle(here)
        opener = rng.choice(people)
        other = _other(people, opener)
        used: set[str] = set()  # no line twice in a session: the same text on the same date is one memory

        greeting, answers = rng.choice(GREETINGS)
        lines: list[tuple[str, str, Fact | None]] = [
            (opener, greeting.format(other=other), None),
            (other, rng.choice(answers), None),
        ]
        for fact in here:
            for _ in range(rng.randrange(0, 3)):
                speaker = rng.choice(people)
                line, mood = rng.choice([t for t in SMALL_TALK if t[0] not in used])
                used.add(line)
                lines.append((speaker, _small_talk(line, rng), None))
                reply = _pick(SMALL_TALK_REPLIES[mood], used, rng) or _pick(ALL_REPLIES, used, rng)
                lines.append((_other(people, speaker), reply or "Ha.", None))
            friend = _other(people, fact.owner)
            lines.append((fact.owner, _fact_text(fact, rng), fact))
            if fact.kind.reply:
                reply = _pick(tuple(fact.fill(r) for r in fact.kind.reply), used, rng)
            else:
                reply = _pick(("Oh wow!", "No way, that's big news.", "Tell them congrats!"), used, rng)
            lines.append((friend, reply or "Wow!", None))
            follow_up = _pick(FOLLOW_UPS, used, rng)
            if follow_up and rng.random() < 0.3:
                lines.append((fact.owner, follow_up, None))
        lines.append((rng.choice(people), rng.choice(CLOSINGS), None))
        for position, (speaker, text, fact) in enumerate(lines):
            key = f"c{number}-s{session + 1}-t{position + 1}"
            if fact is not None:
                fact.key = key
                fact.date = dates[session]
            turns.append((key, text, speaker, session, position))
    return turns


def _pick(options: tuple[str, ...], used: set[str], rng: random.Random) -> str | None:
    """A line not yet said in this session (the same text on the same date would be one memory), or None."""
    fresh = [option for option in options if option not in used]
    if not fresh:
        return None
    line = rng.choice(fresh)
    used.add(line)
    return line


def _other(people: tuple[str, str], speaker: str) -> str:
    return people[1] if speaker == people[0] else people[0]


def _small_talk(template: str, rng: random.Random) -> str:
    return template.format(
        show=rng.choice(SHOWS), cuisine=rng.choice(CUISINES), artist=rng.choice(ARTISTS), podcast=rng.choice(PODCASTS)
    )


def _question(plan: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    facts: list[Fact] = plan["facts"]
    evidence = [f.key for f in facts]
    first = facts[0]
    name = first.owner
    if plan["type"] == "single-hop":
        text = first.fill(rng.choice(first.kind.ask))
        answer = first.fill(first.kind.answer)
    elif plan.get("kind") == "plural":
        text = first.fill(first.kind.plural or "")
        answer = "; ".join(f.fill(f.kind.answer) for f in facts)
    elif plan.get("kind") == "relative":
        values = first.values
        text = (
            f"What news did {name} share about the {values['relation']} who moved to {values['city']}?"
            if rng.random() < 0.5
            else f"What happened to {name}'s {values['relation']} after moving to {values['city']} for {values['why']}?"
        )
        answer = f"{values['relname']} {RELATIVE_NEWS_ANSWERS[int(facts[1].values['news'])]}"
    elif plan.get("kind") == "when":
        text = first.fill(first.kind.when)
        answer = f"around {_human_date(first.date or dt.date.min)} (session date)"
    else:
        a, b = facts
        event_a, event_b = a.fill(a.kind.event), b.fill(b.kind.event)
        earlier = a if (a.date or dt.date.min) < (b.date or dt.date.min) else b
        if plan["kind"] == "order":
            text = f"Which came first for {name}: {event_a} or {event_b}?"
            answer = earlier.fill(earlier.kind.event)
        else:
            text = f"How many weeks passed between {name} {event_a} and {event_b}?"
            weeks = abs(((b.date or dt.date.min) - (a.date or dt.date.min)).days) / 7
            answer = f"about {weeks:.0f} weeks"
    return {"type": plan["type"], "question": text, "evidence": evidence, "answer": answer}
