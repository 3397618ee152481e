"""Paraphrases: notes an agent keeps about its user, and questions that ask for them in other words.

Written by hand. A question shares few words with its note (a name at most, in a few), so the keyword leg has
little to go on and meaning has to carry the match.
"""

from __future__ import annotations

from typing import Any

PAIRS: tuple[tuple[str, str], ...] = (
    (
        "The user can't stand cilantro; to them it tastes like dish soap.",
        "Which herb should I leave out when suggesting recipes?",
    ),
    ("Dana's flight lands at Heathrow Terminal 5 at 07:40 on Friday.", "When does Dana's plane arrive in London?"),
    (
        "Our office Wi-Fi password was changed to blue-otter-93 after the audit.",
        "What is the new wireless network passphrase at work?",
    ),
    (
        "Ravi is colour-blind, so charts for him should avoid red versus green.",
        "How should graphs be designed for Ravi given his vision?",
    ),
    (
        "The landlord agreed to knock £75 off the monthly rent until the boiler is replaced.",
        "What discount did the property owner give while the heating is broken?",
    ),
    (
        "I've decided to stop drinking coffee after 2 pm because it wrecks my sleep.",
        "Why does the user avoid caffeine in the afternoon?",
    ),
    ("Mum's hip surgery is scheduled for 3 October at St Mary's.", "When is my mother having her operation?"),
    (
        "The kids' school ends at 3:15 on Wednesdays instead of the usual 3:45.",
        "What time are the children let out midweek?",
    ),
    (
        "Backups of the family photos go to the external drive in the desk drawer every Sunday.",
        "Where are copies of our pictures kept, and how often are they made?",
    ),
    ("Sam hates surprise parties; he said so after his 30th.", "Would Sam enjoy an unexpected celebration?"),
    ("The car's MOT expires at the end of June.", "When does the vehicle need its annual roadworthiness test?"),
    (
        "The user is training for a triathlon in September and swims three mornings a week.",
        "What endurance event is the user preparing for?",
    ),
    (
        "Don't book anything with Ryanair for Jo; she refuses to fly with them after they lost her luggage.",
        "Which airline does Jo avoid?",
    ),
    (
        "My gym membership renews automatically on the 12th unless cancelled a week before.",
        "When will the fitness club charge me again?",
    ),
    (
        "The team prefers async updates in Slack over daily stand-up calls.",
        "How do colleagues like to share progress?",
    ),
    (
        "Grandpa's router lives behind the TV; turning it off and on fixes most of his problems.",
        "What usually solves my grandfather's internet trouble?",
    ),
    ("The user is vegetarian but eats fish occasionally.", "What dietary restrictions apply when I cook for them?"),
    ("Lena is allergic to penicillin.", "Which antibiotic must Lena never be given?"),
    ("The spare house key is with the neighbours at number 14.", "Who can let me in if I'm locked out?"),
    (
        "Quarterly taxes are due on the 15th of January, April, June and September.",
        "When are estimated payments to the revenue service owed?",
    ),
    (
        "The dog needs his heartworm tablet on the first of every month.",
        "How often does our pet get his parasite medication?",
    ),
    ("Tomás speaks Portuguese and Spanish but barely any English.", "What languages can Tomás communicate in?"),
    (
        "The printer on the third floor jams if you use the recycled paper.",
        "Why does the copier upstairs keep getting stuck?",
    ),
    (
        "Our wedding anniversary is 22 May; we usually go back to the restaurant where we met.",
        "When do my spouse and I celebrate getting married?",
    ),
    (
        "The user gets motion sickness on boats, so avoid ferry routes when planning trips.",
        "Is there any form of water transport I should avoid arranging?",
    ),
    (
        "The client wants the logo bigger and the blue darker in the next draft.",
        "What changes did the customer request to the branding?",
    ),
    (
        "Our budget for the kitchen renovation is capped at £12,000.",
        "How much can we spend on redoing the cooking area?",
    ),
    (
        "Aunt Ruth only reads large-print books because of her cataracts.",
        "What kind of novels should I buy for my elderly relative with eye problems?",
    ),
    (
        "I'm trying to learn 20 new Japanese words a day using flashcards.",
        "What is my daily vocabulary goal for the language I'm studying?",
    ),
    (
        "The API rate limit for the staging environment is 100 calls per minute.",
        "How many requests can a client make to the test server before being throttled?",
    ),
    (
        "Parking at the new office is free after 6 pm and on weekends.",
        "When can I leave my car at work without paying?",
    ),
    (
        "The user works night shifts at the hospital, so don't schedule calls before noon.",
        "What times are bad for arranging meetings with me?",
    ),
    ("Chris is moving to Berlin in March for a job at a start-up.", "Where is Chris relocating, and why?"),
    (
        "The plant on the windowsill is a fiddle-leaf fig and only wants water once a week.",
        "How often should the big leafy houseplant be given a drink?",
    ),
    (
        "My blood pressure readings have been around 135/85 this month.",
        "What have my recent cardiovascular measurements looked like?",
    ),
    (
        "The contract with the cleaning company ends on 30 November and will not be renewed.",
        "When do we stop using the janitorial service?",
    ),
    (
        "The user wants the newsletter sent on Thursday mornings, never on weekends.",
        "On which day should the mailing go out?",
    ),
    ("Ali broke his leg skiing and will be on crutches until February.", "How long will Ali need help getting around?"),
    (
        "The user's favourite film is Spirited Away; they rewatch it every winter.",
        "Which movie does the user return to each year when it's cold?",
    ),
    (
        "Keep receipts for anything over $75; finance rejects expense claims without them.",
        "What proof do I need to get reimbursed for larger purchases?",
    ),
    ("The wedding venue can seat at most 120 guests.", "How many people can attend the reception?"),
    (
        "The bathroom tap drips because the washer is worn; a plumber is coming Tuesday.",
        "What is wrong with the leaking faucet?",
    ),
    (
        "I promised to help Nadia move flats on the last Saturday of the month.",
        "What did I commit to doing for Nadia soon?",
    ),
    (
        "The user prefers window seats on long-haul flights and always books an aisle for short ones.",
        "Where do I like to sit on the plane?",
    ),
    (
        "The board meeting was moved from Thursday to the following Monday at 9.",
        "When is the directors' gathering now?",
    ),
    (
        "Our daughter's piano recital is at the town hall on 8 December at 6 pm.",
        "When and where is my kid performing music?",
    ),
    (
        "The user is saving for a house deposit and wants to put away £800 each month.",
        "How much money do I set aside regularly, and what for?",
    ),
    (
        "Emails from the bank about account verification are phishing; the real bank never asks for a PIN.",
        "How can I tell a scam message claiming to be from my lender?",
    ),
    (
        "The heat pump should be serviced every spring; it was last done in April 2024.",
        "When was the heating system last maintained?",
    ),
    (
        "The user's son is starting secondary school in September and is nervous about the bus ride.",
        "What is worrying my boy about the new school year?",
    ),
)


def build() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    memories = []
    questions = []
    for number, (note, question) in enumerate(PAIRS, 1):
        key = f"note{number:02d}"
        memories.append(
            {
                "key": key,
                "source": "note",
                "text": note,
                "metadata": {"kind": "user-note"},
                "created_at": f"2024-{1 + number % 12:02d}-{1 + number % 27:02d}T08:30:00Z",
            }
        )
        questions.append({"type": "paraphrase", "question": question, "evidence": [key], "answer": note})
    return memories, questions
