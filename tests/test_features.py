"""What the classifiers read: obfuscation undone, links found in any spelling, marker tokens for signals."""

from __future__ import annotations

import hashlib
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moderation.common_words import corpus_common_words
from moderation.features import (
    COMMON_WORDS_FILE,
    FEATURES_VERSION,
    CommentText,
    OtherScript,
    find_urls,
    has_hidden_characters,
    link_count,
    name_read,
    normalize,
    other_script,
    prepare,
    url_domain,
    visible,
)
from moderation.policy import Signals


def markers(body: str, **fields: str) -> list[str]:
    prepared = prepare(CommentText(body=body, **fields))
    return prepared.split(" zzmarkers ", 1)[1].split()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Buy V1AGRA now", "buy viagra now"),
        ("c1al1s and tr4mad0l", "cialis and tramadol"),
        ("c.h.e.a.p meds", "cheap meds"),
        ("p-i-l-l-s here", "pills here"),
        ("v i a g r a", "viagra"),
        ("ＣＨＥＡＰ ｖｉａｇｒａ", "cheap viagra"),  # fullwidth letters
        ("<b>cheap</b>pills <a href='http://x.ru'>here</a>", "cheap pills here"),
        ("\ufeffHello\ufeff  there\n\tfriend", "hello there friend"),
    ],
    ids=["leet", "leet-digits", "dotted", "hyphenated", "spaced", "fullwidth", "html", "bom-and-spaces"],
)
def test_normalize_undoes_obfuscation(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


@pytest.mark.parametrize(
    "text",
    [
        "My GP put me on naproxen and it took the edge off.",
        "I was off work for 3 weeks in 2019, then 2 more.",
    ],
)
def test_normalize_leaves_ordinary_text_alone_apart_from_case(text: str) -> None:
    assert normalize(text) == text.lower()


def test_normalize_keeps_measurements_that_mix_digits_and_letters() -> None:
    assert normalize("Take 800mg ibuprofen, my 5yo had 400mg") == "take 800mg ibuprofen, my 5yo had 400mg"


@pytest.mark.parametrize(
    ("text", "urls", "domains"),
    [
        ("go to https://www.Example.COM/path?q=1. now", ["https://www.Example.COM/path?q=1"], ["example.com"]),
        ("(see http://nhs.uk/conditions).", ["http://nhs.uk/conditions"], ["nhs.uk"]),
        ("visit cheap-pills.xyz today", ["cheap-pills.xyz"], ["cheap-pills.xyz"]),
        ("www.shop.example.org/buy, ok", ["www.shop.example.org/buy"], ["shop.example.org"]),
        ("order at cheapmeds dot com", ["cheapmeds.com"], ["cheapmeds.com"]),
        ("order at cheapmeds (dot) com", ["cheapmeds.com"], ["cheapmeds.com"]),
        ("order at cheapmeds [dot] net", ["cheapmeds.net"], ["cheapmeds.net"]),
        ("http://[2001:db8::1]:8080/x", ["http://[2001:db8::1]:8080/x"], ["2001:db8::1"]),
        ("broken http://[::1/oops here", ["http://[::1/oops"], [""]),
        ("broken http://[nothing-here] too", ["http://[nothing-here"], [""]),
        ("no links, e.g. none at all. Really.", [], []),
        ("join the group: t.me/signals_ng now", ["t.me/signals_ng"], ["t.me"]),
        ("yogamats.in/offer cash on delivery", ["yogamats.in/offer"], ["yogamats.in"]),
        ("ergocadeiras ponto com, parcelamos", ["ergocadeiras.com"], ["ergocadeiras.com"]),
        ("colchones-baratos punto es envío gratis", ["colchones-baratos.es"], ["colchones-baratos.es"]),
        ("al mejor precio en colchonesya.es con envío", ["colchonesya.es"], ["colchonesya.es"]),
        ("cuscini su riposo-sano.it, spedizione gratis", ["riposo-sano.it"], ["riposo-sano.it"]),
        ("braces at bestbraces.co, free shipping", ["bestbraces.co"], ["bestbraces.co"]),
        ("la fiche d'ameli.fr sur la lombalgie", ["ameli.fr"], ["ameli.fr"]),
        ("ORDER AT MEDSFAST.COM TODAY", ["MEDSFAST.COM"], ["medsfast.com"]),
        ("order at medsfast[.]com", ["medsfast.com"], ["medsfast.com"]),
        ("order at medsfast (.) net", ["medsfast.net"], ["medsfast.net"]),
        ("order at medsfast . com", ["medsfast.com"], ["medsfast.com"]),
        ("grab it on amzn.to/3xYzAb quick", ["amzn.to/3xYzAb"], ["amzn.to"]),
    ],
    ids=[
        "https-trailing-dot",
        "in-parentheses",
        "bare-domain",
        "www",
        "dot-com-spelled",
        "dot-in-parens",
        "dot-in-brackets",
        "ipv6",
        "broken-ipv6",
        "brackets-not-ip",
        "none",
        "chat-host",
        "country-ending-with-path",
        "ponto-com",
        "punto-es",
        "word-ending-long-name",
        "word-ending-hyphen",
        "country-ending",
        "country-ending-authority",
        "shouted",
        "bracketed-dot",
        "parenthesised-dot",
        "spaced-dot",
        "amazon-short-link",
    ],
)
def test_find_urls_and_their_domains(text: str, urls: list[str], domains: list[str]) -> None:
    found = find_urls(text)
    assert found == urls
    assert [url_domain(url) for url in found] == domains
    assert link_count(text) == len(urls)


def test_link_count_counts_every_spelling() -> None:
    text = "https://a-shop.com and www.b-shop.net and c-shop.xyz and dshop dot com"
    assert link_count(text) == 4
    assert "zzlinks3" in markers(text)  # capped


def test_missing_space_after_a_full_stop_is_not_a_link() -> None:
    assert link_count("I tried it.It helped a lot.In the end I stopped.") == 0
    assert link_count("It took me a lot.in the end it passed, see me.de facto") == 0  # word endings need a path
    assert link_count("It really helped.it was worth it, and bueno.es verdad") == 0  # or a name sentences never end in


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("call me on +44 20 7946 0958 for a session", "zzphone"),
        ("ring 555-123-4567 today", "zzphone"),
        ("appelez le 06.12.34.56.78", "zzphone"),
        ("booked 12.03.2024, call 0161 496 0018 to get one", "zzphone"),
        ("ring 2019 2023 555 now", "zzphone"),
        ("write to jan.k+clinic@example.org", "zzemail"),
        ("reach him at jan.k.recovery @ cyber-mail .org", "zzemail"),
        ("email drokoro (at) temple-mail dot com today", "zzemail"),
        ("ring Mark on oh seven seven double oh, nine double oh, three one four", "zzphone"),
        ("call zero one two seven three, nine six zero, four four one", "zzphone"),
        ("call five five five, one two three, four five six seven", "zzphone"),
        ("mail jo [AT] clinic [DOT] co.uk", "zzemail"),
        ("jo @ mail . com", "zzemail"),
        ("WRITE TO DAN @ RUBS .COM", "zzemail"),
        ("Email Dan (At) Rubs Dot Com", "zzemail"),
        ("contact drokoro @ temple-mail. com now", "zzemail"),
        ("only $49 this week", "zzmoney"),
        ("earn 500 dollars a day", "zzmoney"),
        ("try 5000 IU of vitamin D", "zzdose"),
        ("take 800mg ibuprofen every 6 hours", "zzfrequency"),
        ("rub it in twice a day", "zzfrequency"),
    ],
)
def test_prepare_emits_a_marker_for_each_signal(body: str, expected: str) -> None:
    assert expected in markers(body)


@pytest.mark.parametrize(
    "body",
    [
        "thanks @Jo. Great tip about the pillow",
        "thanks @mike.in my case it helped",
        "lol @ben.co workers said so",
        "see you @ 7.in the morning",
        "Gracias @maria.es muy util",
        "thanks @Jo. Online shops are cheaper",
        "I went from one to two to three pillows, then four, five and six. Now back to one",
        "meet me at the clinic dot com? no idea what that means",
        "two four six eight, two four six eight, who do we appreciate",
        "oh oh oh oh oh oh oh oh that is so good",
        "Thanks @Jo. It really helped my back",
        "got mine for £30 @ boots. it works",
        "Hi @Anne. Es war hilfreich",
        "oh well, one day at a time",
        "Count slowly: one, two, three, four, five, six, seven, eight, then rest",
        "my little girl counts one two three four five six seven eight nine ten while I stretch",
        "sets of five: one two three four five, one two three four five",
        "ten nine eight seven six five four three two one and relax",
        "I had my disc surgery on 12.03.2024 and by the summer I could walk the dog again",
        "Between 2019-2023 my back pain came and went",
        "from 2019 - 2023, then again 2024/25",
        "scans on 2024-03-12 and 03/12/24, both clear",
        "in hospital 12.03.2024 - 15.03.2024",
        "My steps were 1. 2. 3. 4. 5. 6. on the physio sheet",
        "the clinic is open 09.00-17.00 on weekdays",
        "night shifts 19.30 - 07.30 wreck my back",
        "el médico dice 8.000-10.000 pasos al día",
        "I walk 10,000 - 12,000 steps a day now",
        "I had ops in 2015 2017 and 2019",
        "surgery on 12 03 2024 went fine",
    ],
)
def test_words_that_only_look_like_an_address_or_a_number_are_not_contact_details(body: str) -> None:
    assert not {"zzemail", "zzphone"} & set(markers(body))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # reassurance that a risk is nothing, then "go ahead"
        ("A massage at 20 weeks is totally safe, just book it.", "zzdirmed"),
        ("Don't listen to the midwife about the epidural.", "zzdirmed"),
        ("Might be worth skipping the scan and giving it a few weeks.", "zzdirmed"),
        ("If I was you I'd come off the tramadol.", "zzdirmed"),
        ("I'd stop the tablets and try acupuncture instead.", "zzdirmed"),
        ("Honestly I would never let them operate on a disc like that.", "zzdirmed"),
        ("Prends de l'ibuprofène le soir.", "zzdirmed"),
        ("Take ibuprofen with breakfast every morning.", "zzdirmed"),
        ("Si j'étais toi je prendrais deux comprimés.", "zzdirmed"),
        ("No hagas caso al médico, el masaje es totalmente seguro.", "zzdirmed"),
        ("Non ascoltare l'ortopedico, il massaggio è sicurissimo.", "zzdirmed"),
        ("Wenn ich du wäre, würde ich das Medikament absetzen.", "zzdirmed"),
        ("Nie słuchaj lekarza, masaż to zero ryzyka.", "zzdirmed"),
        ("Ja bym na twoim miejscu wzięła dwie tabletki.", "zzdirmed"),
    ],
)
def test_prepare_marks_advice_phrasings(body: str, expected: str) -> None:
    assert expected in markers(body)


@pytest.mark.parametrize(
    "body",
    [
        "Give it a read, it's a good article about backs.",
        "I gave it a week and my back settled by itself.",
        "Thanks, no risk of me forgetting this one!",
        # a diary with the "I" left out, wishes, and the speaker's own doing in French
        "Take my naproxen with breakfast every morning and it just about holds.",
        "Do my physio exercises twice a day, religiously.",
        "I'd like to try acupuncture for my back, has anyone had it?",
        "I'd been on gabapentin for a year before the surgery.",
        "Moi je prends de l'ibuprofène le soir et ça va mieux.",
    ],
)
def test_reports_and_thanks_are_not_advice(body: str) -> None:
    assert "zzdirmed" not in markers(body)


def test_prepare_counts_doses_up_to_three() -> None:
    assert markers("take 800mg")[:1] == ["zzdose"]
    assert markers("800mg, 2 tablets, 5 ml, 10 drops and 3 capsules").count("zzdose") == 3


def test_prepare_marks_links_with_domain_and_ending() -> None:
    tokens = markers("great prices at https://www.cheap-rx.shop/now")
    assert tokens[:4] == ["zzurl", "zztldshop", "zzdomaincheaprxdotshop", "zzlinks1"]


def test_an_address_reserved_for_examples_is_read_as_a_common_one() -> None:
    """Nearly every made-up shop in the training comments ends in ".example", a reader's blog next to none: read
    as its own ending, a reader's "myblog.example" was rejected as spam. It stands in for a real address."""
    assert {"zztldcom", "zzauthortldcom"} <= set(markers("my write-up: https://jo.example/back", url="https://jo.test"))
    assert "zztldexample" not in markers("see myblog.example/back and https://shop.example/pills")
    assert "zztldorg" in markers("the NHS page https://www.nhs.org/back")  # other endings stay as they are


def test_prepare_marks_the_author_url_and_name() -> None:
    tokens = markers("nice article", author="Jan1987", url=" https://www.my-clinic.biz/ ")
    assert {"zzauthorurl", "zzauthortldbiz", "zzauthordigits"} <= set(tokens)
    assert "zzauthornonlatin" in markers("nice article", author="Jаn")  # Cyrillic a
    assert "zzauthornonlatin" not in markers("nice article", author="Lukas Müller")


SIGNAL_MARKERS = ("zzurl", "zztld", "zzdomain", "zzlinks", "zzauthor", "zzemail", "zzphone", "zzmoney", "zzdose")


@pytest.mark.parametrize(
    "body",
    [
        "I was off work from 2019 to 2021, 3 weeks at a time, aged 45.",
        "Thanks! Shared it with my sister (she's 32) and 2 friends.",
        "Chapter 4.2 of the book says the same; page 118 too.",
    ],
)
def test_numbers_in_ordinary_comments_are_not_signals(body: str) -> None:
    found = [token for token in markers(body) if token.startswith(SIGNAL_MARKERS)]
    assert found == []
    assert markers(body)[-1] == "zzlenmedium"


def test_prepare_puts_normalized_body_and_author_first() -> None:
    prepared = prepare(CommentText(body="Buy V1AGRA", author="<i>Bob's Cheap Pharmacy</i>"))
    assert prepared.startswith("buy viagra zzauthor cheap pharmacy zzmarkers ")


@pytest.mark.parametrize(
    ("author", "read"),
    [
        ("Sarah Johnson", ""),
        ("Aisha Bello", ""),
        ("Mohammed Ali", ""),
        ("Lukas Müller", ""),
        ("Cheap Pills Online", "cheap pills online"),
        ("Best Chiro Near Me", "best chiro near me"),
        ("Mattress Mike", "mattress"),
        ("Ch3ap Ph4rmacy", "cheap pharmacy"),
    ],
)
def test_of_the_authors_name_the_models_read_only_ordinary_words(author: str, read: str) -> None:
    """A reader's own name must not move a score: names seen once in the spam had taught the models that
    "Johnson" or "Bello" is spam, and the same "Nice article, thanks!" was held when signed."""
    assert name_read(author) == read


def test_the_common_words_file_is_what_the_corpus_gives() -> None:
    """Run ``python -m moderation.common_words`` after changing the corpus, and bump FEATURES_VERSION."""
    assert COMMON_WORDS_FILE.read_text(encoding="utf-8").split() == corpus_common_words()


def test_a_name_of_a_business_still_gives_its_markers() -> None:
    assert {"zzauthorcamel", "zzauthorbar"} <= set(markers("Great tips", author="Skye | GreenLeaf"))
    assert not {"zzauthorcamel", "zzauthorbar"} & set(markers("Great tips", author="Sarah McDonald-Jones"))


URLISH = st.lists(
    st.sampled_from(
        [
            "http://",
            "https://",
            "www.",
            "[",
            "]",
            "::1",
            ".com",
            " dot ",
            "com",
            "(",
            ")",
            "example",
            "/p",
            ":",
            "@",
            " ",
            "1",
            "v1agra",
            "c.h.e.a.p",
            "\ufeff",
            "<b>",
            "ｘ",
            "mg",
            "$",
            "+44 ",
        ]
    ),
    max_size=30,
).map("".join)
ANY_TEXT = st.one_of(st.text(), URLISH)


@settings(max_examples=300, deadline=None)
@given(body=ANY_TEXT, author=ANY_TEXT, url=ANY_TEXT)
def test_prepare_never_raises_and_keeps_its_shape(body: str, author: str, url: str) -> None:
    prepared = prepare(CommentText(body=body, author=author, url=url))
    assert " zzauthor " in f" {prepared}"
    assert prepared.split()[-1].startswith("zzlen")


@settings(max_examples=300, deadline=None)
@given(text=ANY_TEXT)
def test_normalize_and_links_never_raise(text: str) -> None:
    normalized = normalize(text)
    assert normalized == normalized.strip()
    urls = find_urls(text)
    assert link_count(text) == len(urls) >= 0
    for url in urls:
        assert isinstance(url_domain(url), str)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # advice asked as a question or hedged: the directive cue leaves questions out
        ("Have you tried 400mg of magnesium at night?", "zzsuggestmed"),
        ("Might be worth going up to the 20 patch? The 10 clearly isn't cutting it.", "zzsuggestmed"),
        ("maybe worth stopping the lansoprazole? mine was giving me the ache", "zzsuggestmed"),  # a drug's ending
        ("Could you not just double up the co-codamol? You should skip the physio too?", "zzsuggestmed"),
        ("¿Y si dejas el tramadol y pruebas con parches de calor?", "zzsuggestmed"),
        ("Warum nicht einfach die Tabletten weglassen?", "zzsuggestmed"),
        # bare instructions: a treatment first, then how much or when
        ("Gabapentin 600mg at bedtime.", "zzbaremed"),
        ("Ice 20 min, then heat.", "zzbaremed"),
        ("Two naproxen now, two more at bedtime.", "zzbaremed"),
        ("@Sam heat for the first 48 hours, not ice", "zzbaremed"),
    ],
)
def test_prepare_marks_suggestions_and_bare_instructions(body: str, expected: str) -> None:
    assert expected in markers(body)


@pytest.mark.parametrize(
    "body",
    [
        "Has anyone tried magnesium for night cramps? My GP had no opinion.",
        "Have you asked your GP about it? Mine was helpful.",
        "Should I take ibuprofen or paracetamol?",
        "I took 800mg ibuprofen every 6 hours for a week.",
        "Two of us went to the physio together.",
        "What about an article on mattresses for couples?",
    ],
)
def test_questions_stories_and_referrals_are_not_suggestions(body: str) -> None:
    found = markers(body)
    assert "zzsuggestmed" not in found
    assert "zzbaremed" not in found


@pytest.mark.parametrize(
    "body",
    [
        "Naproxen 500mg twice daily, in my experience.",
        "Amitriptyline 10mg at night, in my opinion.",
        "Prednisolone 40mg for 5 days, my two cents.",
        "Ice 20 min then heat, in my experience.",
    ],
)
def test_an_instruction_the_writer_only_vouches_for_is_still_bare(body: str) -> None:
    """A review's finding: "my" or "me" anywhere made an instruction the writer's own, and these were approved."""
    assert "zzbaremed" in markers(body)


@pytest.mark.parametrize(
    "body",
    [
        "Stretching every morning changed my life.",
        "Pregabalin 75mg twice daily was my titration schedule.",
    ],
)
def test_a_treatment_the_writer_tells_of_as_their_own_is_not_a_bare_instruction(body: str) -> None:
    assert "zzbaremed" not in markers(body)


def test_a_shops_instruction_in_the_first_person_plural_is_still_bare() -> None:
    assert "zzbaremed" in markers("Heat pad 20 minutes, three times a day: our best seller.")


def test_advice_in_a_long_story_gets_its_own_marker() -> None:
    story = "I hurt my back lifting my son and spent a month on the sofa feeling sorry for myself. " * 5
    assert "zzlongdirmed" in markers(story + "So my advice: take 800mg ibuprofen every 6 hours.")
    assert "zzlongdirmed" not in markers("Take 800mg ibuprofen every 6 hours.")  # short: zzdirmed alone
    assert "zzlongdirmed" not in markers(story)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("suuuper suuuper suuuper", {"zzrepetitive", "zzstretched"}),
        ("the best of the best of the best of the pain of the back", {"zzrepetitive"}),
        ("cloud tractor bleach ointment soft harbour pebble fifteen", {"zznofunction"}),
        ("!!!!!!! ?????? ...... ,,,,,", {"zznoletters"}),
        ("my last reel was me getting off the floor 💀 @liftwithlumbago on IG", {"zzhandle", "zzreferral"}),
        ("use my code BACK10 for 10% off, ask me how", {"zzreferral"}),
    ],
)
def test_prepare_marks_word_salad_repetition_and_quiet_promotion(body: str, expected: set[str]) -> None:
    assert expected <= set(markers(body))


@pytest.mark.parametrize(
    "body",
    [
        "Thanks for the article, it really helped me understand my back.",
        "i dont think u shud take ibuprofin, its bad 4 ur stomack",
        "My physio gave me three exercises and I do them most mornings before work.",
        "@Gary same here, the waiting list is a joke.",
    ],
)
def test_ordinary_sentences_are_not_word_salad_or_promotion(body: str) -> None:
    found = set(markers(body))
    assert not found & {"zzrepetitive", "zznofunction", "zznoletters", "zzstretched", "zzhandle", "zzreferral"}


NEW_CUES = {"zzbaremed", "zzsuggestmed", "zzdirmed", "zzreferral", "zzstretched", "zzhandle", "zznofunction"}
NEW_CUES |= {"zznoletters"}


@pytest.mark.parametrize(
    "body",
    [
        # a body part, care or time opening a sentence is not a treatment
        "Pain for 3 weeks now after the fall.",
        "Hospital visit yesterday took 4 hours.",
        "Back in 2019 things were much worse.",
        "Two weeks later the pain was gone",
        # conjunctions, stories and real questions are not suggestions
        "Tengo dolor de espalda y si camino mucho me duele más.",
        "Minha mãe tem dor nas costas e se sente cansada depois do trabalho.",
        "I can always tell when my back is going to go.",
        "Do you think acupuncture is safe during pregnancy?",
        "Is it true you shouldn't lift anything heavy with a hernia?",
        "Does anyone know if acupuncture is safe with blood thinners?",
        # idioms that look like imperatives
        "Heal well, hope your back is better soon.",
        "Hold on, my back has been bad for 3 weeks.",
        "Let the doctor decide about the surgery.",
        "Leave it to your GP.",
        "Sit tight, the hospital will call in 2 weeks.",
        # episodes, podcasts, teams and look-ups in ordinary talk
        "That was my first proper back episode in years.",
        "There's a good NHS podcast episode on sciatica if anyone prefers listening.",
        "My team at work has been very understanding about the time off.",
        "I had to look it up, I had never heard of spondylolisthesis.",
        # triple letters that are not stretched words
        "Grade III tear, they said. Stage III of the whole saga.",
        "Thanks for this, sending love xxx",
        "Hmmm, not sure the article is right about ice.",
        "Pilates mudou minha vida kkkk sério",
        "The HSE has a page on it: https://www2.hse.ie/conditions/back-pain/",
        # mentioning another commenter
        "I agree with @Maria_K, the waiting list is the real problem.",
        "Cheers for the link @Moira",
        # short sentences written with contractions or in other languages
        "i've had it for years and i don't think it's going away, that's life",
        "Danke, das hat mir sehr geholfen, der Artikel hat alles erklärt.",
        "Non ho capito bene la parte sul ghiaccio, ma grazie per l'articolo.",
        # reactions
        "👍",
        "🙏🙏",
    ],
)
def test_ordinary_sentences_get_none_of_these_markers(body: str) -> None:
    assert not set(markers(body)) & NEW_CUES


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("Ice 20 min, then heat.", "zzbaremed"),
        ("Gabapentin 600mg at bedtime.", "zzbaremed"),
        ("you could always try a heat patch at night", "zzsuggestmed"),
        ("¿Y si dejas el tramadol y pruebas con parches de calor?", "zzsuggestmed"),
        ("Do you think you should double the gabapentin?", "zzsuggestmed"),
        ("Sit on a gym ball instead of a chair all day, it cures a disc.", "zzdirmed"),
        ("Let the chiro crack your neck every week.", "zzdirmed"),
        ("Join my team and work from home, ask me how", "zzreferral"),
        ("New episode of my podcast is out on Spotify", "zzreferral"),
        ("niceeee postttt thankssss", "zzstretched"),
        ("follow @backchatbarry for more polls", "zzhandle"),
        ("I post my routine on TikTok @bendybackbecca, come say hi", "zzhandle"),
        ("@slowspine.sarah on insta if you want to follow along", "zzhandle"),
        ("cloud tractor bleach ointment soft harbour pebble fifteen", "zznofunction"),
        ("😀😀😀😀😀😀👍👍👍👍🔥🔥🔥", "zznoletters"),
    ],
)
def test_advice_and_spam_still_get_their_markers(body: str, expected: str) -> None:
    assert expected in markers(body)


def test_app_and_other_endings_are_links() -> None:
    assert find_urls("quiz here flowmatch.app/yoga and plankpal.app, or zarabiaj-szybko.pl") == [
        "flowmatch.app/yoga",
        "plankpal.app",
        "zarabiaj-szybko.pl",
    ]


HOSTILE_BODIES = {
    "spelled domain after a long hyphenated run": "a-" * 9990 + "point",
    "many short dotted labels": "aa." * 6666,
    "a long dotted local part before @": "a." * 9990 + "@b",
    "a long run of spaces": "x" + " " * 19990 + "y",
    "spaces after a bracket": ")" + " " * 19990 + "y",
    "spaces before a dash": "word" + " " * 19000 + "-",
    "handles every few characters": "@abcd " * 3333,
    "one long handle": "@" + "a." * 9990,
    "could always, over and over": "you could always try " * 950,
    "hold, sit and let, over and over": "hold sit, let the " * 1100,
    "six digit words, over and over": "one two three four five six and " * 600,
    "an (at) before long dotted words": "(at) " + "abc." * 4995,
    "spaces around every @": "a @ " * 4995,
    "spaces either side of a spelled dot": "a" + " " * 9990 + "dot" + " " * 9990 + "x",
    "new lines either side of a bracketed dot": "a" + "\n" * 9990 + "(dot)" + "\n" * 9990 + "x",
}


@pytest.mark.parametrize("body", HOSTILE_BODIES.values(), ids=HOSTILE_BODIES.keys())
def test_hostile_text_at_the_size_limit_is_prepared_in_linear_time(body: str) -> None:
    """Each of these took 1 to 23 s when a pattern retried an unbounded repeat from every position."""
    started = time.process_time()
    prepare(CommentText(body=body))
    Signals.of_text(body)  # the policy's and the lists' reading of its links
    assert time.process_time() - started < 1.0


# Texts that exercise every kind of marker; their prepared form is pinned by FEATURES_VERSION.
FEATURE_SAMPLES = [
    "Cheap v\u200bi\u200ba\u200bg\u200br\u200ba at pi\u00adlls-now.com, best price",
    "Thanks, great article! Massage helped my lower back a lot.",
    "Take 800mg ibuprofen every 6 hours and skip the physio, it's just sciatica.",
    "Have you tried magnesium? Might be worth a go for the cramps.",
    "Gabapentin 600mg at bedtime, then taper over two weeks.",
    "Best prices on v1agra at www.cheap-rx-pharmacy.xyz, call +1 555 010 2030 or DM me on Telegram",
    "Visit mysite dot com for the 3-day back cure!!! $29 only",
    "Ring Dan on oh seven seven double oh, nine double oh, or mail dan (at) rubs dot com",
    "Or write to dan @ rubs .org, or count: one two three four five six seven eight",
    "WRITE TO DAN [AT] RUBS [DOT] COM, thanks @jo.it helped: two four six eight, two four six eight",
    "suuuuper amazing amazing amazing product product buy buy",
    "Mi fisioterapeuta me dijo que caminara más; ahora estoy mucho mejor.",
    "Nimm einfach 400 mg Ibuprofen dreimal täglich, das hilft sofort.",
    "Prends du paracétamol et repose-toi, pas besoin de voir un médecin.",
    "@BackPainGuru follow me on instagram, use my code BACK10",
    "My GP referred me to a physio after the MRI; I'd ask yours about it.",
    "<b>Great</b> read &amp; very clear. c.h.e.a.p pills?",
    "👍🙏",
    "Surgery on 12.03.2024 after pain from 2019-2023, and the scan on 2024-03-12 was clear",
    "I wrote up my sciatica year at https://jo-writes.example/back-pain",
    "I just take paracetamol, up to three a day. Never had a massage that helped. Subscribed!",
    "Check out my reply, not my song. Never exceed 4000mg. Mi raccomando, niente alcol. Visit my clinic!",
    "Je ne prends plus d'ibuprofène. El masaje me deja relajada. Faz dois anos. Yoga macht mir Spaß.",
    "Stretching every morning changed my life.",
]
AUTHOR_SAMPLES = ["Sarah Johnson", "Skye | GreenLeaf Cheap Pills", "Jürgen M.", "TruthSeeker77", "Dr Dozy"]
PINNED_FEATURES = {"2026-12-08.1": "f06eaf12a90749c3ec0ffd01fa8c91ff1a61be0a900adb43adc76173ec424a0c"}


def test_the_prepared_form_of_the_samples_is_pinned_by_the_features_version() -> None:
    """A change to what prepare() makes changes what models were trained on: bump FEATURES_VERSION
    (models trained before then warn when loaded) and record the new digest here."""
    prepared = "\n".join(
        [prepare(CommentText(body=text, url="https://example.org/me")) for text in FEATURE_SAMPLES]
        + [prepare(CommentText(body="Nice article, thanks!", author=author)) for author in AUTHOR_SAMPLES]
    )
    digest = hashlib.sha256(prepared.encode()).hexdigest()
    assert PINNED_FEATURES.get(FEATURES_VERSION) == digest, f"features changed: {FEATURES_VERSION} {digest}"


NONE, PASSAGE, MOSTLY = OtherScript.NONE, OtherScript.PASSAGE, OtherScript.MOSTLY


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Massage helped my back a lot.", NONE),
        ("Gracias, el masaje me ayudó muchísimo con la espalda.", NONE),  # Latin with accents
        ("Größtenteils hilfreich, danke für den Artikel über Ischias.", NONE),
        ("Cảm ơn bài viết, rất hữu ích cho người bị đau lưng.", NONE),  # Vietnamese: Latin Extended Additional
        ("Спасибо за статью, массаж мне очень помог.", MOSTLY),
        ("按摩对我的背痛很有帮助，谢谢这篇文章。", MOSTLY),
        ("شكرا على المقال، التدليك ساعدني كثيرا", MOSTLY),
        ("Ευχαριστώ για το άρθρο, με βοήθησε πολύ.", MOSTLY),
        ("Thanks Дмитрий, the stretches you mentioned in the article helped my back.", NONE),  # a name
        ("Thanks Дмитрий Иванович, the stretches in the article helped my back a lot.", NONE),
        ("ok 👍 да", NONE),  # too few letters to say, and half of them Latin
        # Short, and all in another script: the models scored these 0.93 spam, rejected at 0.63 (a new user).
        ("Спасибо!", MOSTLY),
        ("Супер", MOSTLY),
        ("شكرا", MOSTLY),
        ("谢谢", MOSTLY),
        ("🙏🙏🙏", NONE),
        ("ｃｈｅａｐ ｏｘｙｃｏｄｏｎｅ ｏｎｌｉｎｅ ｎｏ ｒｘ", NONE),  # fullwidth: spam's disguise, still Latin
        ("𝐜𝐡𝐞𝐚𝐩 𝐩𝐢𝐥𝐥𝐬 𝐡𝐞𝐫𝐞 𝐧𝐨𝐰", NONE),
        ("ᴄʜᴇᴀᴘ ᴘɪʟʟꜱ ʜᴇʀᴇ ɴᴏᴡ", NONE),  # small capitals
        ("Gеnеriс раinkillеrs аt whоlеsаlе рriсеs, оrdеr nоw", NONE),  # Cyrillic lookalikes inside Latin words
        # Latin lookalikes swapped into Russian words: still Russian (П, и, н, м, й, т are not lookalikes).
        ("Пpинимaйтe ибупpoфeн пo 800 мг тpи paзa в дeнь, и нe xoдитe к вpaчу.", MOSTLY),
        (  # a sentence in another script after an English one: the leak a majority rule let through
            "Great article, I agree with most of it. Принимайте ибупрофен по 800 мг три раза в день.",
            MOSTLY,
        ),
        (  # a passage inside a long English comment: the scores still read the rest
            "I had the same sciatica for months and the physio exercises in this article helped more than "
            "anything else, so thank you for writing it. Моя бабушка говорит то же самое.",
            PASSAGE,
        ),
        ("Best pills cheap at www.pills.example order now " * 20 + "谢谢谢谢谢谢谢谢谢谢谢谢谢谢谢谢谢谢谢谢", PASSAGE),
        ("Спасибо большое! https://example.org/a-very-long-english-looking-link-about-back-pain-and-massage", MOSTLY),
        # text hidden in a link's path is read too
        ("Useful, see https://example.org/Принимайте_ибупрофен_по_800_мг_три_раза_в_день", PASSAGE),
        # a zero-width space between letters split each word into letters, and a lookalike then counted alone
        ("\u200b".join("Спaсибо"), MOSTLY),
    ],
)
def test_other_script_tells_mostly_a_passage_or_none(text: str, expected: OtherScript) -> None:
    assert other_script(text) is expected


@pytest.mark.parametrize(
    "body",
    [
        "It feels like my lower back is on fire every morning",
        "I asked the physio to check my posture",
        "I want to share my experience with the injections",
        "He likes to follow my lead on stretching",
    ],
)
def test_ordinary_uses_of_promotion_words_are_not_self_promotion(body: str) -> None:
    assert "zzpromo" not in markers(body)


@pytest.mark.parametrize(
    "body", ["Like my page for more stretches!", "check my channel for the full routine", "follow my instagram"]
)
def test_promotion_of_a_channel_is_self_promotion(body: str) -> None:
    assert "zzpromo" in markers(body)


@pytest.mark.parametrize("mark", ["\u200b", "\u00ad", "\u2060", "\u200c", "\u200d", "\u034f", "\ufeff", "\u202e"])
def test_the_models_read_text_without_characters_drawn_as_nothing(mark: str) -> None:
    plain = CommentText(body="Buy cheap viagra at pills-direct.com, take 2 every 6 hours", author="Pill Shop")
    dressed = CommentText(body=" ".join(mark.join(word) for word in plain.body.split()), author=mark.join(plain.author))
    assert prepare(dressed) == prepare(plain)
    # A soft hyphen is read past but holds nothing: pages that hyphenate put it between letters.
    assert has_hidden_characters(dressed.body) == (mark != "\u00ad") and not has_hidden_characters(plain.body)


@pytest.mark.parametrize(
    "text",
    [
        "Great article. \u202e" + "sruoh 6 yreve neforpubi gm008 ekaT" + "\u202c",  # shown as "Take 800mg..."
        "G\u00e9\u200bn\u00e9rique pills",
        "v\u200b1agra",
        "ab\U000e0041c",
    ],
)
def test_text_turned_around_or_dressed_inside_a_word_is_hidden_characters(text: str) -> None:
    """A right-to-left override shows readers the advice while the models read it backwards (a cold review)."""
    assert has_hidden_characters(text)


@pytest.mark.parametrize(
    "text",
    [
        "Thanks \u2764\ufe0f",
        "Family 👨\u200d👩\u200d👧",
        "1\ufe0f\u20e3 first",
        "\U0001f3f4\U000e0067\U000e0062\U000e007f",
    ],
)
def test_emoji_are_not_hidden_characters(text: str) -> None:
    """Joiners and selectors inside emoji stay for the models; a keycap's selector after its digit and a flag's
    tag characters are left out for them (no meaning is lost), and none of it holds the comment."""
    assert not has_hidden_characters(text)
    assert visible(text) == text or "\u20e3" in text or "\U000e0067" in text


@pytest.mark.parametrize(
    "text",
    [
        "Family day out 👨\u200d👩\u200d👧 and my back survived",  # joiners inside an emoji sequence
        "می\u200cخواهم بدانم",  # Persian writes a non-joiner inside words
        "\ufeffA byte-order mark before the first word",
        "Thanks \u2764\ufe0f",  # a variation selector after an emoji
        "Bandscheiben\u00advorfall nach dem Heben",  # a soft hyphen copied from a page that hyphenates
        "plain ASCII text",
    ],
)
def test_invisible_characters_writers_use_are_not_hidden_characters(text: str) -> None:
    assert not has_hidden_characters(text)
