"""The fitted classifier: the fast scoring path equals scikit-learn's, explanations name real words."""

from __future__ import annotations

import random
import re
import unicodedata
from collections import Counter

import numpy as np
import pytest
from sklearn.base import clone

from moderation import classifier, cues, features
from moderation.classifier import LABELS
from moderation.cues import cue_tokens, looks_like_gibberish
from moderation.data import load_own_corpus
from moderation.features import CommentText, normalize, prepare, prepare_many
from tests.conftest import TrainedModel

ODD = [
    CommentText(body=""),
    CommentText(body="   \n\t "),
    CommentText(body="Ｖｉａｇｒａ ⅽheap!!! 💊💊 www.pills.xyz", author="BUY N0W", url="http://pills.xyz"),
    CommentText(body="Ça fait mal au dos depuis des semaines, j'ai vu mon médecin."),
    CommentText(body="word " * 3000),
]


def test_fast_path_matches_predict_proba(trained_model: TrainedModel) -> None:
    model = trained_model.model
    comments = [e.comment for e in load_own_corpus()[:400]] + ODD
    expected = model.score_matrix(model.transform(comments))
    actual = model.probabilities(comments)
    for label in LABELS:
        np.testing.assert_allclose(actual[label], expected[label], rtol=0, atol=1e-5)


def test_fast_path_is_unchanged_when_the_word_cache_overflows(
    trained_model: TrainedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = trained_model.model
    comments = [e.comment for e in load_own_corpus()[:50]]
    before = model.probabilities(comments)
    monkeypatch.setattr(classifier, "WORD_CACHE_SIZE", 10)
    after = model.probabilities(comments)
    # A batch mixing words the cache holds with new ones, once the cache is over its bound.
    mixed = model.probabilities([*comments[:5], CommentText(body="zebra quokka axolotl " * 3)])
    for label in LABELS:
        np.testing.assert_allclose(after[label], before[label], atol=1e-12)
        np.testing.assert_allclose(mixed[label][:5], before[label][:5], atol=1e-12)


def reference_explanation(model: classifier.ModerationModel, comment: CommentText) -> dict[str, dict[str, float]]:
    """Each word's log-odds contribution computed with scikit-learn's own transforms (slow, but plainly right)."""
    prepared = prepare(comment)
    row = model.vectorizer.transform([prepared]).toarray().ravel()
    words_hash, chars_hash = (p.named_steps["hash"] for _, p in model.vectorizer.transformer_list)
    words = sorted(set(classifier.WORD_RE.findall(prepared)))
    unigrams = words_hash.set_params(ngram_range=(1, 1)).transform(words).toarray()
    words_hash.set_params(ngram_range=(1, 2))
    membership = np.hstack([unigrams, chars_hash.transform(words).toarray()]) > 0
    result = {}
    for label in LABELS:
        per_word = membership @ (row * model._coefficients(label))
        merged: dict[str, float] = {}
        names = classifier._names_shown(words, prepared, normalize(comment.author))
        for name, weight in zip(names, per_word, strict=True):
            if weight > 0 and name:
                merged[name] = merged.get(name, 0.0) + float(weight)
        result[label] = merged
    return result


def test_explanations_match_the_reference_computation(trained_model: TrainedModel) -> None:
    model = trained_model.model
    for example in load_own_corpus()[:60:3]:
        explained = model.explain(example.comment, top=5)
        expected = reference_explanation(model, example.comment)
        for label in LABELS:
            for item in explained[label]:
                assert item["weight"] == pytest.approx(expected[label][item["feature"]], abs=2e-3)
            strongest = sorted(expected[label].values(), reverse=True)[: len(explained[label])]
            assert [item["weight"] for item in explained[label]] == pytest.approx(strongest, abs=2e-3)


def test_a_batch_is_scored_and_explained_as_each_comment_alone(trained_model: TrainedModel) -> None:
    """Workers decide waiting comments together; each must get what it would have got on its own."""
    model = trained_model.model
    comments = [e.comment for e in load_own_corpus()[:40:4]] + [CommentText(body="!!! ???"), CommentText(body="ok")]
    together = model.score_and_explain_many(comments)
    assert len(together) == len(comments)
    for comment, (scores, explained) in zip(comments, together, strict=True):
        alone_scores = model.score(comment)
        assert scores.spam == pytest.approx(alone_scores.spam) and scores.medical_advice == pytest.approx(
            alone_scores.medical_advice
        )
        assert explained == model.explain(comment)
    assert model.score_and_explain_many([]) == []


def test_explanations_name_words_of_the_comment(trained_model: TrainedModel) -> None:
    comment = CommentText(body="Stop the gabapentin and take 800mg ibuprofen every 6 hours, order cheap at pillz.xyz")
    explained = trained_model.model.explain(comment)
    assert set(explained) == set(LABELS)
    words = {item["feature"] for items in explained.values() for item in items}
    assert words and all(item["weight"] > 0 for items in explained.values() for item in items)
    vocabulary = (
        set(comment.body.lower().replace(",", " ").split())
        | set(classifier.MARKER_NAMES.values())
        | {name for _, name in classifier.MARKER_PREFIXES}
    )
    assert words <= vocabulary | {"800mg", "6", "pillz", "xyz"}


def test_an_explanation_does_not_call_hours_at_a_desk_a_dosing_schedule(trained_model: TrainedModel) -> None:
    """ "10 hours a day" gives the same marker as "twice a day"; named after doses, it read as if the model had
    seen one in a comment about sitting."""
    explained = trained_model.model.explain(CommentText(body="I sit at a desk 10 hours a day and my back aches"), 20)
    features = [item["feature"] for items in explained.values() for item in items]
    assert "how often (a day, daily, at night)" in features, features
    assert not [feature for feature in features if "dos" in feature], features


def test_a_readers_own_name_does_not_move_the_scores(trained_model: TrainedModel) -> None:
    """A tester's finding: "Nice article, thanks!" was approved unsigned and held as possible spam signed "Sarah
    Johnson", "John Smith" or "Aisha Bello" (spam 0.09 against 0.33-0.36), from names seen once in the spam."""
    bodies = ["Nice article, thanks!", "Love this site.", "Massage helped me so much!!", "Helpful, thanks!"]
    names = ["Sarah Johnson", "John Smith", "Aisha Bello", "Maria Lopez", "Mohammed Ali", "Jessica Taylor"]
    anonymous = trained_model.model.score_many([CommentText(body=body) for body in bodies])
    for name in names:
        signed = trained_model.model.score_many([CommentText(body=body, author=name) for body in bodies])
        assert signed == anonymous, name


def test_a_word_found_only_in_the_authors_name_is_named_as_the_names(trained_model: TrainedModel) -> None:
    """A moderator reading "pharmacy" among the words that drove a score looks for it in the text: a word only
    in the name says where it is; one in both the name and the text is the text's (one feature to the model)."""

    def explaining_words(comment: CommentText) -> set[str]:
        explained = trained_model.model.explain(comment, top=100)  # every word that pushed a score up
        return {item["feature"] for items in explained.values() for item in items}

    words = explaining_words(CommentText(body="Thanks Bob, great article", author="Bob Cheap Pharmacy"))
    assert {"name: cheap", "name: pharmacy"} & words, words
    assert not words & {"pharmacy", "cheap", "name: bob", "name: thanks"}, words
    spelled = explaining_words(CommentText(body="cheap zzauthor pharmacy pills"))
    assert not [word for word in spelled if word.startswith("name: ")], spelled
    # a name may spell the marker too (normalized from "z.z.a.u.t.h.o.r" as well)
    named = explaining_words(CommentText(body="Thanks, great", author="Cheap Pharmacy z.z.a.u.t.h.o.r Al"))
    assert {"name: cheap", "name: pharmacy"} & named and not named & {"cheap", "pharmacy"}, named


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Take 800mg ibuprofen every 6 hours.", {"zzdirmed"}),
        ("That's sciatica, not a muscle.", {"zzdiag"}),
        ("Please see your GP about it.", {"zzrefer"}),
        ("My GP put me on naproxen 500mg and it helped.", {"zznarrmed"}),
        ("Is 600mg of ibuprofen too much?", {"zzqmed"}),
        ("@Tom skip the physio", {"zzreply", "zzdirmed"}),
        ("Yo que tú dejaría el tramadol.", {"zzdirmed"}),
        ("Skip the follow-up. They'll only tell you what you know.", {"zzdirmed"}),
        ("@Ruth you can absolutely stay on the diclofenac long term", {"zzreply", "zzdirmed"}),
        ("What your wife has is SI joint dysfunction, not sciatica.", {"zzdiag"}),
        ("I wouldn't go to A&E for that. Stay home and lie flat.", {"zzdirmed"}),
        ("Est-ce qu'on peut prendre de l'ibuprofène ?", {"zzqmed"}),
        ("Cat cow fifty times a day. That's the cure.", {"zzcure"}),
        ("great video! check out my channel and subscribe", {"zzpromo"}),
        ("He's on telegram @JamesFX, message him", {"zzcontact"}),
        # orders that look like the statements below
        ("I know it hurts but just take the tablets.", {"zzdirmed"}),
        ("Rest and take paracetamol every 4 hours.", {"zzdirmed"}),
        ("You just take 2 paracetamol and rest.", {"zzdirmed"}),
        ("Never take ibuprofen on an empty stomach.", {"zzdirmed"}),
        ("Don't get the injection, it's a racket.", {"zzdirmed"}),
        ("Surtout ne te fais pas opérer, annule le rendez-vous.", {"zzdir"}),
        ("Não se deixe operar, a hérnia reabsorve sozinha.", {"zzdirmed"}),
        ("Faz alongamento todo dia.", {"zzdir"}),
        ("check out my new video on sciatica", {"zzpromo"}),
        ("No long paragraph, just check out my song called Fire", {"zzpromo"}),
        ("pls share my music and like my cover", {"zzpromo"}),
        ("reach out to me on the app for prices", {"zzcontact"}),
        ("Up the dose to 600mg.", {"zzdirmed"}),
        ("Niente antidolorifici, solo riposo.", {"zzdir"}),
    ],
)
def test_cues(text: str, expected: set[str]) -> None:
    assert expected <= set(cue_tokens(text))


@pytest.mark.parametrize(
    ("text", "absent"),
    [
        ("I took 800mg ibuprofen every 6 hours for a week.", "zzdirmed"),  # a story, not a directive
        ("Should I take ibuprofen or paracetamol?", "zzdirmed"),  # a question
        ("My GP said it's probably a muscle strain.", "zzrefer"),
        ("I subscribed to the newsletter, thanks", "zzcontact"),
        ("The physio gave me exercises, I do them daily.", "zzdiag"),
        ("I subscribed to the newsletter, thanks", "zzpromo"),
        # the writer's own doing, a statement with its subject left out, a third person's, a noun, a time
        ("I just take paracetamol when it flares up.", "zzdirmed"),
        ("On bad days I stay in bed and take paracetamol.", "zzdirmed"),
        ("I ice it then take ibuprofen before bed.", "zzdirmed"),
        ("Never had a massage that helped for more than a day.", "zzdirmed"),
        ("Never needed painkillers after the physio.", "zzdirmed"),
        ("Don't get me wrong, massage feels great.", "zzdirmed"),
        ("Don't know why, but the massage helped.", "zzdirmed"),
        ("Je ne prends plus d'ibuprofène depuis que je fais du yoga.", "zzdirmed"),
        ("Ik neem zelf soms ibuprofen als het erg is.", "zzdirmed"),
        ("El masaje me deja relajada pero el dolor vuelve.", "zzdirmed"),
        ("Non c'è nessuna prova che il massaggio funzioni.", "zzdirmed"),
        ("Yoga macht mir Spaß und der Rücken tut weniger weh.", "zzdir"),
        ("Faz dois anos que tenho dor nas costas.", "zzdirmed"),
        ("Subscribed! Looking forward to the next one on sciatica.", "zzpromo"),
        ("Check out my earlier reply, I got the dates wrong.", "zzpromo"),
        ("check out my comment above about the physio", "zzpromo"),
        ("I had to visit my GP three times before the referral.", "zzpromo"),
        ("I try to watch my posture at the desk.", "zzpromo"),
        ("Please reach out to friends or family if you're struggling.", "zzcontact"),
        ("I went on naproxen for a while, up to three a day, and it helped a bit.", "zzdirmed"),
        ("I'll just take the ibuprofen tonight and see how it goes.", "zzdirmed"),
        ("Il massaggio non mi ha fatto niente, purtroppo.", "zzdirmed"),
    ],
)
def test_cues_absent(text: str, absent: str) -> None:
    assert absent not in cue_tokens(text)


@pytest.mark.parametrize(
    "text",
    [
        "Never exceed 4000mg of paracetamol in 24 hours.",  # a base verb that ends in -ed
        "Never feed a baby under one honey for colic.",
        "Per la sciatica niente fisioterapia: riposo assoluto a letto per venti giorni.",  # "niente" without "non"
        "@Lucia niente ghiaccio con il colpo della strega, borsa dell'acqua calda tutta la notte.",
        "Mi raccomando, niente alcol con il paracetamolo.",
        "I'm a GP and just stop the metformin if you're vomiting.",  # the writer introduces themselves, then orders
        "I'm a pharmacist and never exceed 4g of paracetamol a day.",
        "I know it's sore and just take 400mg ibuprofen with food.",
        "Don't even think about stopping your sertraline suddenly.",
        "Never again take ibuprofen on an empty stomach.",
        "Worked for me its safe to take two at once.",  # a formula after "me"
        "Se toma una pastilla cada 8 horas.",  # the impersonal instruction
        "Faz mais alongamentos todos os dias.",
        "Faz uma caminhada todo dia.",
        "Up to 8 tablets in 24 hours, at least 4 hours apart.",  # a sentence that opens with the amount
    ],
)
def test_orders_beside_the_statements_left_alone_are_still_orders(text: str) -> None:
    """Found by a review of the rules that leave statements alone: each was an order before them, and is."""
    assert any(token.startswith("zzdir") for token in cue_tokens(text)), cue_tokens(text)


@pytest.mark.parametrize(
    "text",
    [
        "Started a channel about my recovery, it would mean the world if you subscribed. Bent Not Broken Vlogs",
        "Visit my clinic in Leeds for a free assessment.",
        "Reach out to our team for wholesale CBD prices.",
        "Reach out to us for a free consultation.",
        "Support my small business, handmade heat packs.",
        "Watch my tutorial on youtube.",
    ],
)
def test_self_promotion_beside_the_phrases_narrowed_still_promotes(text: str) -> None:
    assert {"zzpromo", "zzcontact"} & set(cue_tokens(text)), cue_tokens(text)


def test_phrase_index_matches_words_prefixes_and_any_word() -> None:
    index = cues.PhraseIndex.of(["take it", "physio*", "vitamin *", "setz* * ab"])
    assert index.found_in(cues.words_of("Just take it easy"))
    assert index.found_in(cues.words_of("my physiotherapist"))
    assert index.found_in(cues.words_of("try vitamin D"))
    assert index.found_in(cues.words_of("Setz es ab, sofort"))
    assert not index.found_in(cues.words_of("take care, vitamin"))  # a phrase needs all its words
    assert index.positions(cues.words_of("take it or take it")) == [(0, 2), (3, 5)]


def test_ordinary_text_is_not_gibberish() -> None:
    ordinary = [e.comment.body for e in load_own_corpus() if not e.spam and not e.medical_advice]
    flagged = [body for body in ordinary if looks_like_gibberish(body)]
    assert len(flagged) / len(ordinary) < 0.02, flagged[:10]


# --- the fast paths give exactly what the plain definitions give ------------------------------------

LONG = "A perfectly ordinary sentence about my back pain and the exercises. " * 5  # past GIBBERISH_MAX_CHARS
# Varied comments and the exact cue tokens they got when every phrase list was walked over every sentence
# (before per-token flags): English and six other languages, replies, typos, doses, links, promotion,
# gibberish, and letters that lower() treats specially ("Σ" at a word's end, "İ").
CUE_CASES = [
    ("Take 800mg ibuprofen every 6 hours.", ["zzdirmed", "zzstake"]),
    ("Take 800 mg of ibuprofen, then 5 ml of the syrup twice a day.", ["zzdirmed", "zzstake"]),
    ("I took 800mg ibuprofen every 6 hours for a week.", ["zznarrmed", "zzsi"]),
    ("Should I take ibuprofen or paracetamol?", ["zznarrmed", "zzqmed", "zzsshould"]),
    (
        "You should stop the gabapentin. Just stretch and walk it off, trust me!",
        ["zzdirmed", "zzdirmedmany", "zzsyou", "zzsjust"],
    ),
    ("@Tom skip the physio, go to a chiropractor instead", ["zzdirmed", "zzreply", "zzsskip"]),
    ("@Ruth you can absolutely stay on the diclofenac long term", ["zzdirmed", "zzreply", "zzsyou"]),
    (
        "Replying to @sam: don't bother with the MRI, it's a pulled muscle",
        ["zzdiag", "zzdirmed", "zzreply", "zzsreplying"],  # naming the person replied to is not a handle to follow
    ),
    (
        "That's sciatica, not a muscle. Sounds like a classic slipped disc to me.",
        ["zzdiag", "zznarrmed", "zzsthat's", "zzssounds"],
    ),
    ("What your wife has is SI joint dysfunction, not sciatica.", ["zzdiag", "zzswhat"]),
    ("Please see your GP about it. Or ask for a referral to a physiotherapist.", ["zzrefer", "zzsplease", "zzsor"]),
    ("My GP put me on naproxen 500mg and it helped.", ["zznarrmed", "zzsmy"]),
    ("I wouldn't go to A&E for that. Stay home and lie flat.", ["zzdir", "zzdirmed", "zzrefer", "zzsi", "zzsstay"]),
    ("i dont think u shud take ibuprofin, its bad 4 ur stomack", ["zzsi"]),
    ("Yo que tú dejaría el tramadol. Toma paracetamol y descansa.", ["zzdirmed", "zzdirmedmany", "zzsyo", "zzstoma"]),
    (
        "Est-ce qu'on peut prendre de l'ibuprofène ? Arrête le doliprane, va voir ton médecin.",
        ["zzdirmed", "zzqmed", "zzrefer", "zzsest", "zzsarrête"],
    ),
    ("Nimm einfach Ibuprofen und geh zum Arzt, das ist ein Hexenschuss.", ["zzdiag", "zzdirmed", "zzrefer", "zzsnimm"]),
    ("Se eu fosse você, tomava o remédio. Pare de fazer exercício!", ["zzdir", "zzsse", "zzspare"]),
    # "medico" is a medical term (care itself, as "doctor" is), so the directive is one about treatment
    ("Prendi l'ibuprofene e vai dal medico, è un'ernia.", ["zzdirmed", "zzrefer", "zzsprendi"]),
    ("Neem een pijnstiller en probeer te rusten, ga naar de huisarts.", ["zzdirmed", "zzrefer", "zzsneem"]),
    ("Cat cow fifty times a day. That's the cure.", ["zzcure", "zzscat", "zzsthat's"]),
    ("great video! check out my channel and subscribe", ["zzpromo", "zzsgreat", "zzscheck"]),
    ("Great video!!! Check my\nchannel for more, sub 4 sub", ["zzpromo", "zzsgreat", "zzscheck", "zzschannel"]),
    ("He's on telegram @JamesFX, message him on whatsapp +44 7700 900123", ["zzcontact", "zzhandle", "zzshe's"]),
    ("Order cheap pills at www.pillz-shop.xyz or t.me/cheapmeds, link in bio", ["zzdirmed", "zzpromo", "zzsorder"]),
    ("Visit bit.ly/abc123 - guaranteed to fix it for good!!", ["zzcure", "zzsvisit", "zzsguaranteed"]),
    ("asdfghjkl qwerty zxcvbnm", ["zzgibberish", "zzsasdfghjkl"]),
    ("bcdfg hjklm npqrst vwxyz", ["zzgibberish", "zzsbcdfg"]),
    ("buy buy buy buy buy now", ["zzdir", "zzgibberish", "zznofunction", "zzrepetitive", "zzsbuy"]),
    ("aaaaaaaaaa", ["zzgibberish", "zzstretched", "zzsaaaaaaaaaa"]),
    ("ΣΣΣΣΣΣ ΟΔΟΣ ΣΑΣ", ["zzgibberish", "zzstretched", "zzsσσσσσς"]),
    ("İİİİİİ İstanbul ılık", ["zzgibberish", "zzrepetitive", "zzsi"]),
    (
        "Don’t take it; really: don't. And then take the pills.",
        ["zzdir", "zzdirmed", "zzsdon't", "zzsreally", "zzsand"],
    ),
    ("the physio said (quietly) Stop stretching - it makes the disc worse", ["zzdirmed", "zzsthe", "zzsstop", "zzsit"]),
    ("So take it easy, then rest; and use ice.", ["zzdir", "zzdirmed", "zzsso", "zzsand"]),
    ("I'd up the dose to 1200mg if I were you", ["zzdirmed", "zzsi'd"]),
    ("You've got a herniated disc, you need to see a specialist", ["zzdiag", "zzdirmed", "zzrefer", "zzsyou've"]),
    ("The one you want is the 5% lidocaine patch, worth trying", ["zzdirmed", "zzsthe"]),
    ("Is 600mg of ibuprofen too much?", ["zzqmed", "zzsis"]),
    ("Thanks for the video 👍", ["zzsthanks"]),
    ("", []),
    ("   \n\t ", []),
    ("ok", ["zzsok"]),
    ("word " * 80, ["zzsword"]),
    (LONG + "ΣΣΣΣΣΣ", ["zzgibberish", "zznarrmed", "zzstretched", "zzsa", "zzsa", "zzsa", "zzsa", "zzsa", "zzsσσσσσς"]),
    (LONG + "İİİİİİ", ["zzgibberish", "zznarrmed", "zzsa", "zzsa", "zzsa", "zzsa", "zzsa", "zzsi"]),
    (LONG + "AaAaAa", ["zznarrmed", "zzstretched", "zzsa", "zzsa", "zzsa", "zzsa", "zzsa", "zzsaaaaaa"]),
    (
        LONG + "zzzzzz!",
        ["zzgibberish", "zznarrmed", "zzstretched", "zzsa", "zzsa", "zzsa", "zzsa", "zzsa", "zzszzzzzz"],
    ),
    (LONG + "ςςςςςς", ["zzgibberish", "zznarrmed", "zzstretched", "zzsa", "zzsa", "zzsa", "zzsa", "zzsa", "zzsςςςςςς"]),
]


@pytest.mark.parametrize(("text", "expected"), CUE_CASES)
def test_cue_tokens_are_unchanged(text: str, expected: list[str]) -> None:
    assert cue_tokens(text) == expected


def plain_gibberish(text: str) -> bool:
    """looks_like_gibberish as defined: over the letter runs of the whole lower-cased text."""
    if cues.REPEATED_LETTER_RE.search(text):
        return True
    if len(text) > cues.GIBBERISH_MAX_CHARS:
        return False
    words = cues.WORD_RE.findall(text.lower())
    if not words:
        return False
    long_words = [w for w in words if len(w) >= 4]
    no_vowels = sum(1 for w in long_words if cues.VOWELS.isdisjoint(w))
    mashed = sum(1 for w in long_words if cues.KEYBOARD_RUNS_RE.search(w))
    repeated_word = len(words) >= 4 and Counter(words).most_common(1)[0][1] / len(words) >= 0.5
    return (no_vowels + mashed) >= max(1, len(long_words) // 3) or repeated_word


def tricky_texts(count: int, seed: int = 0) -> list[str]:
    """Random runs of letters that case-fold oddly, repeats, keyboard rows, digits and punctuation."""
    pieces = [*"aAeEqwertyasdfzxcvbnmİıΣσςßéÉ1²_ '’&-.?!\n\t@,;:", "l'", "d'", "\u00a0", "\u0307", "ǅ", "K", "ſ"]
    generator = random.Random(seed)
    return [
        "".join(generator.choice(pieces) * generator.choice([1, 1, 2, 3, 6]) for _ in range(generator.randint(0, 30)))
        for _ in range(count)
    ]


def test_gibberish_is_judged_on_the_words_of_the_whole_text() -> None:
    texts = [text for text, _ in CUE_CASES] + [e.comment.body for e in load_own_corpus()[:600]] + tricky_texts(4000)
    assert [looks_like_gibberish(text) for text in texts] == [plain_gibberish(text) for text in texts]


def phrase_words() -> list[str]:
    """Words the phrase lists know, prefixes with endings, and a few they do not."""
    found = {",", ":", ";", "the", "a", "zebra", "800mg", "800", "mg"}
    pending = [cue.index.root for cue in cues.CUES]
    while pending:
        node = pending.pop()
        found.update(node.children)
        found.update(prefix + ending for prefix in node.prefixed for ending in ("", "x", "ing"))
        pending += [*node.children.values(), *node.prefixed.values()]
    return sorted(found)


def test_token_flags_answer_as_the_phrase_indexes_do() -> None:
    generator = random.Random(1)
    vocabulary = phrase_words()
    token_lists = [cues.words_of(s) for e in load_own_corpus()[:800] for s in cues.sentences(e.comment.body)]
    token_lists += [generator.choices(vocabulary, k=generator.randint(1, 8)) for _ in range(3000)]
    for tokens in token_lists:
        words = cues.Words.of(tokens)
        for cue in cues.CUES:
            assert words.found(cue) == cue.index.found_in(tokens), (cue.index, tokens)
            assert words.positions(cue) == cue.index.positions(tokens), (cue.index, tokens)
            assert [words.phrase_at(cue, j) for j in range(len(tokens))] == [
                bool(cue.index.ends_at(tokens, j)) for j in range(len(tokens))
            ]


def plain_normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    text = features.HTML_TAG_RE.sub(" ", text)
    text = text.replace("\ufeff", " ").lower()
    text = features.SPACED_LETTERS_RE.sub(lambda m: re.sub(r"[.\-_*\s]", "", m.group(0)), text)
    text = features.LEET_WORD_RE.sub(
        lambda m: m.group(0) if m.group(0).isdigit() else m.group(0).translate(features.LEET), text
    )
    return features.WHITESPACE_RE.sub(" ", text).strip()


def test_pattern_shortcuts_skip_only_texts_the_patterns_cannot_match() -> None:
    tricky = ["every 6 hours", "EVERY 8 HOURS", "twice a \t day", "NİGHT", "at nıght", "DAİLY", "10 uſd", "5 BUCKS"]
    tricky += ["€5", "£ 12", "$3", "20 Dollars", "www.x.com", "WWW.X.COM", "http://x", "it.It", "t.me/x", "v1agra"]
    tricky += ["pa!n", "p@in", "800mg", "c.h.e.a.p", "\u00a0a\u2003b\n", "x\x1cy", "visit pills dot com"]
    texts = tricky + [text for text, _ in CUE_CASES] + [e.comment.body for e in load_own_corpus()[:1500]]
    texts += tricky_texts(2000, seed=2)
    for text in texts:
        assert features._has_frequency(text) == bool(features.FREQUENCY_RE.search(text)), text
        assert ("zzmoney" in features._number_tokens(text)) == bool(features.MONEY_RE.search(text)), text
        links = [m.group(0).rstrip(".,;:!?)]") for m in features.URL_RE.finditer(text)]
        assert features.find_urls(text)[: len(links)] == links, text
        assert features.normalize(text) == plain_normalize(text), text


def assert_counts_are_the_hashers(model: classifier.ModerationModel, texts: list[str]) -> None:
    counted = model._fast_scorer().counts(texts)
    for counts, (_, pipeline) in zip(counted, model.vectorizer.transformer_list, strict=True):
        expected = pipeline.named_steps["hash"].transform(texts).tocsr()
        np.testing.assert_array_equal(counts.indptr, expected.indptr)
        np.testing.assert_array_equal(counts.indices, expected.indices)
        np.testing.assert_array_equal(counts.data, expected.data.astype(np.float64))


def test_counts_are_exactly_the_hashers(trained_model: TrainedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    model = trained_model.model
    comments = [e.comment for e in load_own_corpus()[:300]] + ODD
    texts = prepare_many(comments + [CommentText(body=text) for text, _ in CUE_CASES])
    assert_counts_are_the_hashers(model, texts)  # words new to the table
    assert_counts_are_the_hashers(model, texts)  # words it holds
    assert_counts_are_the_hashers(model, texts[:1])
    # Past its bounds the table is emptied and refilled: first for pairs of tokens alone, then for words.
    monkeypatch.setattr(classifier, "BIGRAM_CACHE_SIZE", 10)
    more = [prepare_many([e.comment for e in load_own_corpus()[start : start + 30]]) for start in (300, 330, 360)]
    assert_counts_are_the_hashers(model, more[0])
    assert_counts_are_the_hashers(model, [*texts[:20], *more[1], "zebra quokka axolotl"])
    monkeypatch.setattr(classifier, "WORD_CACHE_SIZE", 10)
    assert_counts_are_the_hashers(model, more[2])
    assert_counts_are_the_hashers(model, [*texts[5:40], *more[0], "okapi narwhal"])


def test_word_columns_are_a_words_unigram_then_its_char_ngrams(trained_model: TrainedModel) -> None:
    model = trained_model.model
    words_hash, chars_hash = (p.named_steps["hash"] for _, p in model.vectorizer.transformer_list)
    unigrams = clone(words_hash).set_params(ngram_range=(1, 1))
    words = ["Ibuprofen", "zzdose", "x", "ΟΔΟΣ", "800mg", "v1agra", "ibuprofen", "x"]
    columns, owners = model._fast_scorer().word_columns(words)
    for i, word in enumerate(words):
        expected = np.concatenate(
            [unigrams.transform([word]).indices, chars_hash.transform([word]).indices + classifier.WORD_FEATURES]
        )
        np.testing.assert_array_equal(columns[owners == i], expected)
