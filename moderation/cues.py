"""Sentence-level cues of advice-giving, aggregated to marker tokens for the whole comment.

A linear model over words sees "ibuprofen" both in "I took ibuprofen" and in "take ibuprofen"; what makes
the second one advice is that a directive and a medical term share a sentence, or that someone else is
being diagnosed. These cues put that interaction into tokens the classifiers can weigh. They cover
English and the most common forms in Spanish, French, German, Portuguese, Italian and Dutch.

The cues are phrase lists matched over a sentence's words (see ``PhraseIndex``) rather than regular
expressions: a regex alternation of hundreds of words is retried at every character, which made this
step cost more than the whole classification; a dictionary lookup per word does not.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

SENTENCE_SPLIT_RE = re.compile(r"(?<=[.!?;…])\s+|\n+|\s+-\s+|(?<=\))\s+(?=[A-Z@])")
# Words (contractions kept whole: "don't", "j'ai") and the clause marks that start a new directive.
TOKEN_RE = re.compile(r"\w+(?:'\w+)*|[,:;]")
CLAUSE_MARKS = frozenset(",:;")
DOSE_TOKEN_RE = re.compile(r"\d+(?:mg|mcg|iu|ml|g)")
DOSE_UNITS = frozenset({"mg", "mcg", "iu", "ml", "g"})


def _phrases(*groups: str) -> list[str]:
    """Phrases written one per line or separated by '|'; a trailing * on a word makes it a prefix,
    a lone * stands for any word."""
    return [p.strip() for group in groups for p in re.split(r"[|\n]", group) if p.strip()]


def _product(heads: Sequence[str], tails: Sequence[str]) -> list[str]:
    return [f"{head} {tail}" for head in heads for tail in tails]


@dataclass
class _Node:
    children: dict[str, _Node] = field(default_factory=dict)
    prefixed: dict[str, _Node] = field(default_factory=dict)  # a word ending in * ("physio*"); "" is any word
    complete: bool = False

    def child(self, word: str) -> _Node:
        table = self.prefixed if word.endswith("*") else self.children
        return table.setdefault(word.rstrip("*"), _Node())

    def ends(self, tokens: Sequence[str], j: int, found: list[int]) -> None:
        """Collect the end positions of the phrases that continue from this node at token ``j``."""
        if self.complete:
            found.append(j)
        if j == len(tokens):
            return
        token = tokens[j]
        exact = self.children.get(token)
        if exact is not None:
            exact.ends(tokens, j + 1, found)
        for prefix, node in self.prefixed.items():
            if token.startswith(prefix) and token not in CLAUSE_MARKS:
                node.ends(tokens, j + 1, found)


@dataclass
class PhraseIndex:
    """Phrases over word tokens as a trie of words; a word may be a prefix ("physio*") or any word ("*")."""

    root: _Node
    first_prefixes: tuple[str, ...]

    @classmethod
    def of(cls, phrases: Iterable[str]) -> PhraseIndex:
        root = _Node()
        for phrase in phrases:
            node = root
            for word in phrase.split():
                node = node.child(word)
            node.complete = True
        return cls(root, tuple(root.prefixed))

    def starts(self, tokens: Sequence[str]) -> list[int]:
        """Positions where some phrase may start (its first word or prefix is there)."""
        exact, prefixes = self.root.children, self.first_prefixes
        if prefixes:
            return [i for i, token in enumerate(tokens) if token in exact or token.startswith(prefixes)]
        return [i for i, token in enumerate(tokens) if token in exact]

    def ends_at(self, tokens: Sequence[str], i: int) -> list[int]:
        """The end positions (exclusive) of every phrase that starts at token ``i``."""
        found: list[int] = []
        self.root.ends(tokens, i, found)
        return found

    def positions(self, tokens: Sequence[str]) -> list[tuple[int, int]]:
        """(start, end) of every phrase found."""
        return [(i, end) for i in self.starts(tokens) for end in self.ends_at(tokens, i)]

    def found_in(self, tokens: Sequence[str]) -> bool:
        return any(self.ends_at(tokens, i) for i in self.starts(tokens))


MEDICAL = PhraseIndex.of(
    _phrases(
        "ibuprofen|naproxen|aleve|advil|motrin|nurofen|brufen|tylenol|paracetamol|acetaminophen|aspirin|codeine",
        "co codamol|tramadol|oxycodone|morphine|fentanyl|opioid|opioids|gabapentin|pregabalin|lyrica",
        "amitriptyline|duloxetine|diazepam|valium|muscle relaxant|muscle relaxants|cyclobenzaprine|diclofenac",
        "voltaren|celecoxib|meloxicam|steroid|steroids|prednisolone|prednisone|cortisone|injection|injections",
        "epidural|patch|tablet|tablets|pill|pills|capsule|capsules|med|meds|medication|medicine|painkiller",
        "painkillers|anti inflammator*|antiinflammator*|nsaid|nsaids|vitamin *|magnesium|turmeric|curcumin|cbd|arnica",
        "glucosamine|calcium|supplement|supplements|dose|dosage|surgery|operation|op|fusion|discectomy",
        "microdiscectomy|mri|x ray|xray|scan|physio*|chiro*|adjust*|manipulat*|crack*|stretch*|exercise",
        "exercises|inversion|traction|brace|ice|heat|hot water bottle|bed rest|sciatica|disc|hernia*|slipped",
        "piriformis|arthritis|osteoporosis|fracture|spasm|nerve|spine|spinal|vertebra*|pelvi*|sacroiliac",
        "si joint|pregnan*|weeks|pain|sore|ache|back|neck|hip|leg",
        "médicament*|medicamento*|medikament*|farmac*|cirug*|chirurg*|opera*|pastill*|comprim*|tablett*",
        "schmerz*|dolor*|douleur*|dolore|dor|ernia|hernie|hérnia|rugpijn|ibuprofeno|pijnstiller|pijnstillers",
        "ibuprofène|paracétamol|doliprane|paracetamolo",
        # care itself: what to skip, refuse or carry on with is medical too
        "appointment|follow up|followup|hospital|gp|doctor|physio|osteo*|ostéo*|consultant|specialist|referral",
        "results|test|tests|blood|a e|er|surgeon|midwife|infiltra*|yoga|pilates|trampoline|headstand*|workout",
    )
)

# Imperatives count where a clause starts, or after "just", "then", "and", "so", "please".
IMPERATIVES = PhraseIndex.of(
    _phrases(
        "take|try|stop|quit|start|skip|avoid|ditch|bin|drop|double|halve|use|rub|put|apply|crack|pop|go|get",
        "ask them|ask your doc*|ask for|tell them|tell your|tell her|tell him|refuse|cancel|come off|wean",
        "switch|swap|stay|rest|walk|sleep|do|don't|dont|never|keep|stick|push|throw|lie|hang|book|buy|order",
        "eat|drink|forget|ignore|insist|demand|increase|decrease|up|cut",
    )
)
IMPERATIVE_LEADS = frozenset({"just", "then", "and", "so", "please"})

SOMEONE = ["you", "u", "ya", "she", "he", "they", "your mum", "your mom", "your dad", "your husband", "your wife"]
SOMEONE += ["your partner"]
MUST = _phrases(
    "should|shouldn't|shouldnt|must|need to|needs to|have to|has to|ought to|want to|wanna|gotta|can just",
    "could just|could always|might want to|don't need|dont need|do not need|just need",
)
# Directives that count anywhere in a sentence: someone told what to do, first-person advice formulas,
# and imperatives in the other languages.
DIRECTIVES = PhraseIndex.of(
    _product(SOMEONE, MUST)
    + _phrases(
        "i wouldn't bother|i wouldn't take|i wouldn't go|i wouldn't let|i wouldn't risk|i wouldnt bother",
        "i wouldnt take|i wouldnt go|i wouldnt let|i wouldnt risk|save yourself|i'd|i would|if i were you",
        "if it were me|my advice|i recommend|i suggest|do yourself a favour|do yourself a favor|trust me",
        "id|worth taking|worth trying|worth asking for|no need to|don't bother|dont bother|there's no need",
        "theres no need|go ahead|the one you want|is what you need|you'll be fine|youll be fine|it's safe to",
        "its safe to|it's fine to|its fine to|is safe|is totally safe|is perfectly safe",
        "you can absolutely|you can definitely|you can still|you can keep|you can carry on|you can safely",
        "you're fine to|youre fine to|you'll be ok|nothing stopping you|no reason not to|carry on with",
        "don't panic|dont panic|don't worry about|dont worry about|mark my words|believe me|perfectly fine to",
        "completely safe|totally fine|no need for|won't need|wont need|you don't need|you dont need",
        # Spanish, French, German, Portuguese, Italian, Dutch
        "toma|tome|tomad|prueba|deja de|déjalo|deje|evita|no vayas|no te operes|rechaza|tómate|tomate|haz",
        "hazte|deja|olvida|olvídate|duerme|no dejes|dile|dígale|ve al|no hace falta|yo que tú|yo en tu lugar",
        "si fuera tú|déjal*|tómal*",
        "prends|prenez|essaie|essayez|arrête|arrêtes|arrêtez|évite|évites|évitez|n'allez pas|refuse|refuses",
        "refusez|dis|fais|faites|oublie|oubliez|laisse|laissez|vas y|allez y|n'hésite|dors|à ta place",
        "à votre place",
        "nimm|nehmen sie|probier|hör auf|hören sie auf|setz* * ab|setz* sie * ab|lass* * weg|lass* sie * weg",
        "vermeide|geh nicht|mach|macht|vergiss|vergessen sie|lass|lassen sie|sag|sagen sie|geh|schlaf",
        "an deiner stelle|an ihrer stelle|auf keinen fall|bloß nicht",
        "experimente|pare de|pára de|evite|não vá|recuse|faz|faça|fazei|deixa|deixe|esquece|esqueça",
        "nem precisa|diz|diga|no teu lugar|se eu fosse você",
        "prendi|prenda|prova|smetti|smetta|non andare|rifiuta*|dormi|fai|fate|dì|dille|digli|lascia",
        "lasciate|se fossi in te|al posto tuo|niente",
        "neem|probeer|stop met|gewoon stoppen|vermijd",
    )
)

DIAGNOSIS_LEADS = PhraseIndex.of(
    _phrases(
        "that's|thats|that is|it's|its|sounds like|sounds more like|you've got|youve got|you've just",
        "you have|you've|youve|she's got|he's got|classic|definitely|almost certainly|probably|i reckon",
        "that crunching is|es un|es una|c'est un|c'est une|das ist|é um|é uma|è un|è una|dat is",
        "what you have is|what you've got is|what he has is|what she has is|what your * has is",
        "what your * has got is|it's definitely|its definitely|that's definitely|thats definitely",
    )
)
CONDITIONS = PhraseIndex.of(
    _phrases(
        "sciatica|piriformis|herniat*|hernia*|slipped disc|disc*|si joint|sacroiliac|arthritis|spondylo*",
        "stenosis*|fracture*|muscle*|strain*|sprain*|pulled*|nerve*|spd|pelvic girdle|kidney*|shingles",
        "fibro*|ankylosing|scoliosis|degenerat*|ciática|sciatique|ischias|ciatica|hernie|ernia|hérnia",
        "hexenschuss|lumbago",
    )
)
DIAGNOSIS_GAP = 3  # words allowed between "that's" and the condition: "that's a classic pulled muscle"

REFERRAL_LEADS = PhraseIndex.of(
    _phrases(
        "see|ask|talk to|speak to|check with|go to|call|ring|book in with|mention it to|consulta|consulte",
        "consultes|consultez|va voir|allez voir|geh zum|gehen sie zum|procure|vá ao|chiedi al|vai dal|ga naar",
        *_product(["get it", "get that", "get this"], ["checked", "looked at"]),
    )
)
DETERMINERS = frozenset(_phrases("a|an|your|the|un|una|tu|ton|ta|votre|deinen|ihren|seu|sua|il|al|de|je"))
PROFESSIONALS = PhraseIndex.of(
    _phrases(
        "gp|doctor|doc|physio*|physical therapist|pt|midwife|pharmacist|consultant|specialist|nurse|a e|er",
        "emergency|111|999|911|médico|médecin|arzt|ärztin|medico|huisarts|fisio*|kiné*",
    )
)

NARRATIVE = PhraseIndex.of(
    _phrases(
        "i|i'm|im|i've|ive|i'd|i'll|me|mine|we|was prescribed|they gave me|had me|put me on",
        *_product(["my"], _phrases("gp|doctor|physio|surgeon|consultant|midwife|back|husband|wife|mum|mom|dad")),
        *_product(["my"], _phrases("gp's|doctor's|physio's|surgeon's|husband's|wife's|mum's|mom's|dad's")),
        "yo|me recetó|mi médico|je|j'ai|mon médecin|ich|mein arzt|eu|meu médico|io|il mio medico|ik",
    )
)

# Claims that something cures: advice when addressed to readers, adverts when selling.
CURE_CLAIMS = PhraseIndex.of(
    _phrases(
        "the cure|is the cure|cures it|cure it|will cure|will fix|fixes it|fix it for good|fixed for good|sorts it",
        "sort it out|clears it|clear it up|works every time|guaranteed|miracle|100 works|cura|guérit|heilt|cura tutto",
    )
)
# Promotion of the writer's own channel, page or shop, in the forms video and social comment sections use.
SELF_PROMOTION = PhraseIndex.of(
    _phrases(
        "subscribe|subscribed|subscribers|sub to|sub 4 sub|sub4sub|suscríbete|suscribete|inscreva|abonniert|abonnez",
        "iscriviti|my channel|my youtube|my yt|my tiktok|my instagram|my insta|my ig|my page|my reel|my reels",
        "my video|my videos|my vid|my latest video|my latest reel|my blog|my shop|my store|my website|my site",
        "my link|my bio|link in bio|link in my bio|follow me|follow my|check out my|check my|visit my|watch my",
        "like my|share my|support my|small creator|small youtuber|mi canal|meu canal|ma chaîne|mein kanal",
        "il mio canale|mi página|minha página|ma page|mon site|meine seite|visita mi|visite meu|go like",
        "leave a like|give it a like|smash that like|hit the like|hit subscribe",
    )
)
# Taking the conversation somewhere private, as scams and sellers do.
CONTACT_OFFER = PhraseIndex.of(
    _phrases(
        "telegram|whatsapp|whats app|wechat|signal group|dm me|message me|inbox me|pm me|text me|email me",
        "contact me|reach me|reach out to|ask me for|ask for price|price list|ask me and|on telegram|on whatsapp",
        "escríbeme|escribeme|mándame|chame no|me chama|écris moi|écrivez moi|schreib mir|scrivimi",
    )
)


def sentences(text: str) -> list[str]:
    return [s.strip() for s in SENTENCE_SPLIT_RE.split(text) if s and s.strip()]


ELISION_RE = re.compile(r"\b([ld])'")  # l'ernia, d'ibuprofène: the word after the article is what counts


def words_of(sentence: str) -> list[str]:
    text = sentence.lower().replace("’", "'").replace("&", " ")
    return TOKEN_RE.findall(ELISION_RE.sub(r"\1 ", text) if "'" in text else text)


def has_medical_term(tokens: Sequence[str]) -> bool:
    if MEDICAL.found_in(tokens):
        return True
    for i, token in enumerate(tokens):
        if token[0].isdigit():
            if DOSE_TOKEN_RE.fullmatch(token):
                return True
            if token.isdigit() and i + 1 < len(tokens) and tokens[i + 1] in DOSE_UNITS:
                return True
    return False


def has_directive(tokens: Sequence[str], reply: bool) -> bool:
    if DIRECTIVES.found_in(tokens):
        return True
    for i in IMPERATIVES.starts(tokens):
        previous = tokens[i - 1] if i else ","
        clause_start = previous in CLAUSE_MARKS or (reply and i == 1)
        if (clause_start or previous in IMPERATIVE_LEADS) and IMPERATIVES.ends_at(tokens, i):
            return True
    return False


def has_diagnosis(tokens: Sequence[str]) -> bool:
    leads = DIAGNOSIS_LEADS.positions(tokens)
    if not leads:
        return False
    conditions = [start for start, _ in CONDITIONS.positions(tokens)]
    return any(0 <= start - end <= DIAGNOSIS_GAP for _, end in leads for start in conditions)


def has_referral(tokens: Sequence[str]) -> bool:
    for _, end in REFERRAL_LEADS.positions(tokens):
        if end < len(tokens) and PROFESSIONALS.ends_at(tokens, end):
            return True
        if end + 1 < len(tokens) and tokens[end] in DETERMINERS and PROFESSIONALS.ends_at(tokens, end + 1):
            return True
    return False


VOWELS = set("aeiouyàáâäèéêëìíîïòóôöùúûüæœå")
KEYBOARD_RUNS_RE = re.compile(
    "qwer|wert|asdf|sdfg|dfgh|fghj|ghjk|hjkl|zxcv|xcvb|cvbn|vbnm|uiop|yuio|tyui|rtyu|qaz|wsx|edc|rfv|tgb|yhn"
    "|ujm|ikl|mnb"
)
WORD_RE = re.compile(r"[^\W\d_]+", re.UNICODE)
REPEATED_LETTER_RE = re.compile(r"([^\W\d_])\1{5,}")
GIBBERISH_MAX_CHARS = 300


def looks_like_gibberish(text: str) -> bool:
    """Keyboard mash, vowel-less strings, or the same word or letter over and over."""
    if REPEATED_LETTER_RE.search(text):
        return True
    if len(text) > GIBBERISH_MAX_CHARS:  # long texts are judged by their words, not as mash
        return False
    words = WORD_RE.findall(text.lower())
    if not words:
        return False
    long_words = [w for w in words if len(w) >= 4]
    no_vowels = sum(1 for w in long_words if VOWELS.isdisjoint(w))
    mashed = sum(1 for w in long_words if KEYBOARD_RUNS_RE.search(w))
    repeated_word = len(words) >= 4 and Counter(words).most_common(1)[0][1] / len(words) >= 0.5
    return (no_vowels + mashed) >= max(1, len(long_words) // 3) or repeated_word


def opening_token(tokens: Sequence[str], reply: bool) -> list[str]:
    """The first word of a sentence (past an @reply), as a token: imperatives live there in every language."""
    for token in tokens[1:] if reply else tokens:
        if token[0].isalpha():
            return [f"zzs{token}"]
    return []


def cue_tokens(text: str) -> list[str]:
    """Marker tokens for the cues found, once each per comment (with a count for directives)."""
    found: set[str] = set()
    medical_directives = 0
    openings: list[str] = []
    every_word: list[str] = []
    for sentence in sentences(text):
        tokens = words_of(sentence)
        if not tokens:
            continue
        every_word += tokens
        reply = sentence.startswith("@")
        openings += opening_token(tokens, reply)
        medical = has_medical_term(tokens)
        directive = has_directive(tokens, reply)
        question = sentence.endswith("?")
        if directive and not question:
            if medical:
                medical_directives += 1
                found.add("zzdirmed")
            else:
                found.add("zzdir")
        if not question and has_diagnosis(tokens):
            found.add("zzdiag")
        if has_referral(tokens):
            found.add("zzrefer")
        if question and medical:
            found.add("zzqmed")
        if medical and not directive and NARRATIVE.found_in(tokens):
            found.add("zznarrmed")
    if text.lstrip().startswith("@") or text.lower().lstrip().startswith("replying to"):
        found.add("zzreply")
    if looks_like_gibberish(text):
        found.add("zzgibberish")
    if CURE_CLAIMS.found_in(every_word):
        found.add("zzcure")
    if SELF_PROMOTION.found_in(every_word):
        found.add("zzpromo")
    if CONTACT_OFFER.found_in(every_word):
        found.add("zzcontact")
    tokens = sorted(found)
    if medical_directives > 1:
        tokens.append("zzdirmedmany")
    return tokens + openings
