"""Sentence-level cues of advice-giving, aggregated to marker tokens for the whole comment.

A linear model over words sees "ibuprofen" both in "I took ibuprofen" and in "take ibuprofen"; what makes
the second one advice is that a directive and a medical term share a sentence, or that someone else is
being diagnosed. These cues put that interaction into tokens the classifiers can weigh. They cover
English and the most common forms in Spanish, French, German, Portuguese, Italian, Dutch and Polish.

The cues are phrase lists matched over a sentence's words (see ``PhraseIndex``) rather than regular
expressions: a regex alternation of hundreds of words is retried at every character, which made this
step cost more than the whole classification; a dictionary lookup per word does not. What a word is to
every list (and to the gibberish test) is worked out once per distinct word and kept, so a sentence
costs one lookup per word and the lists are walked only where a phrase may be (see ``Words``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import reduce
from itertools import chain
from operator import or_
from typing import TypeVar

_Value = TypeVar("_Value")

# "(?<!\s)" starts a dash's whitespace only once: a long run of spaces would otherwise be tried from each space.
SENTENCE_SPLIT_RE = re.compile(r"(?<=[.!?;…])\s+|\n+|(?<!\s)\s+-\s+|(?<=\))\s+(?=[A-Z@])")
# Words (contractions kept whole: "don't", "j'ai") and the clause marks that start a new directive.
TOKEN_RE = re.compile(r"\w+(?:'\w+)*|[,:;]")
CLAUSE_MARKS = frozenset(",:;")
DOSE_TOKEN_RE = re.compile(r"\d+(?:mg|mcg|iu|ml|g)")
DOSE_UNITS = frozenset({"mg", "mcg", "iu", "ml", "g"})
TOKEN_CACHE_SIZE = 100_000  # distinct words (and tokens) whose tokens, flags and counts a process keeps


class _TokenCache(dict[str, _Value]):
    """Something about each token (or word), computed on first sight; emptied when full, so memory stays
    bounded."""

    def __init__(self, compute: Callable[[str], _Value]) -> None:
        super().__init__()
        self.compute = compute

    def __missing__(self, token: str) -> _Value:
        if len(self) >= TOKEN_CACHE_SIZE:
            self.clear()
        value = self[token] = self.compute(token)
        return value


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
    # The first prefixes that are whole phrases by themselves ("physio*"), and the second words of the
    # phrases whose first word is exact (not a prefix).
    whole_prefixes: tuple[str, ...] = ()
    second_words: frozenset[str] = frozenset()

    @classmethod
    def of(cls, phrases: Iterable[str]) -> PhraseIndex:
        root = _Node()
        for phrase in phrases:
            node = root
            for word in phrase.split():
                node = node.child(word)
            node.complete = True
        whole_prefixes = tuple(prefix for prefix, node in root.prefixed.items() if node.complete)
        second_words = frozenset(word for node in root.children.values() for word in node.children)
        return cls(root, tuple(root.prefixed), whole_prefixes, second_words)

    def may_start(self, token: str) -> bool:
        """Whether ``starts`` lists the positions holding this token."""
        return token in self.root.children or token.startswith(self.first_prefixes)

    def is_phrase(self, token: str) -> bool:
        """Whether this token alone is a whole phrase: ``ends_at`` of its position holds the next one."""
        exact = self.root.children.get(token)
        if exact is not None and exact.complete:
            return True
        return token not in CLAUSE_MARKS and token.startswith(self.whole_prefixes)

    def loose_start(self, token: str) -> bool:
        """Whether a phrase of two words or more may begin at this token with a next word that is not one of
        ``second_words``: the token matches a prefix, or the phrases of its word go on with a prefix or any word."""
        if token.startswith(self.first_prefixes):
            return True
        exact = self.root.children.get(token)
        return exact is not None and bool(exact.prefixed)

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
        "ibuprofène|paracétamol|doliprane|paracetamolo|calpol|dorflex|neurolog*|gummy|gummies|epsom",
        # care itself: what to skip, refuse or carry on with is medical too
        "appointment|follow up|followup|hospital|gp|doctor|physio|osteo*|ostéo*|consultant|specialist|referral",
        "results|test|tests|blood|a e|er|surgeon|midwife|infiltra*|yoga|pilates|trampoline|headstand*|workout",
        "massage|massages|acupuncture|dexa|prescription|prescribed|trimester|laminectomy|osteopath*",
        # the same in the other languages: treatments, carers and pregnancy are what such advice is about
        "masaje|masajes|massaggio|massaggi|massagem|massagens|masaż|masażu|agopuntura|acupuntura|akupunktur",
        "médico|médecin|arzt|ärztin|medico|lekarz|lekarza|lekarzem|ortoped*|matrona|sage femme|hebamme",
        "ostetrica|parteira|verloskundige|położna|położnej|embarazo|grossesse|schwangerschaft|gravidanza",
        "gravidez|zwangerschap|ciąża|ciąży|tabletki|tabletkę|zastrzyk*|operacj*|ból|bólu",
        "rezonans*|kręg*|piscina|cortisone|cortisona|kortison|pediatr*|rehabilitacj*|fizjoterapeut*",
    )
)

# Imperatives count where a clause starts, or after "just", "then", "and", "so", "please".
IMPERATIVES = PhraseIndex.of(
    _phrases(
        "take|try|stop|quit|start|skip|avoid|ditch|bin|drop|double|halve|use|rub|put|apply|crack|pop|go|get",
        "ask them|ask your doc*|ask for|tell them|tell your|tell her|tell him|refuse|cancel|come off|wean",
        "switch|swap|stay|rest|walk|sleep|do|don't|dont|never|keep|stick|push|throw|lie|hang|book|buy|order",
        "eat|drink|forget|ignore|insist|demand|increase|decrease|up|cut",
        # what to do with a treatment: "stick one on and leave it all day", "wear it", "let them do it"; the
        # conditional ones below only with a treatment, dose or time in the sentence
        "leave|wear|sit|hold|repeat|soak|wrap|lift|bend|stick|press|roll|lay|tell the|let them|let the|let him",
        "let her",
    )
)
IMPERATIVE_LEADS = frozenset({"just", "then", "and", "so", "please"})
# Imperatives that are as often ordinary talk ("Let the doctor decide", "Leave it to your GP", "Sit tight",
# "Hold on"): directives only in a sentence that names a treatment, a dose or a time ("Sit on a gym ball all
# day", "hold a plank two minutes"), and never in the idioms.
CONDITIONAL_IMPERATIVES = frozenset({"leave", "sit", "hold", "let"})
IMPERATIVE_IDIOMS = frozenset({("hold", "on"), ("hold", "off"), ("hold", "up"), ("sit", "tight"), ("up", "to")})

SOMEONE = ["you", "u", "ya", "she", "he", "they", "your mum", "your mom", "your dad", "your husband", "your wife"]
SOMEONE += ["your partner"]
MUST = _phrases(
    "should|shouldn't|shouldnt|must|need to|needs to|have to|has to|ought to|want to|wanna|gotta|can just",
    "could just|could always|might want to|don't need|dont need|do not need|just need",
    "doesn't need|doesnt need|does not need",
)
WOULD = ["i'd", "i would", "id"]
WOULD_DO = _phrases(
    "take|try|stop|quit|start|skip|avoid|ditch|bin|drop|double|halve|use|switch|swap|stay|rest|keep|stick",
    "push|insist|demand|ask|tell|refuse|cancel|come off|wean|go|get|see|book|buy|order|up|cut|increase",
    "decrease|ignore|forget|leave|wear|put|give|not|never|definitely|personally|probably|seriously|want",
)
# Directives that count anywhere in a sentence: someone told what to do, first-person advice formulas,
# and imperatives in the other languages.
DIRECTIVES = PhraseIndex.of(
    _product(SOMEONE, MUST)
    + _phrases(
        "i wouldn't bother|i wouldn't take|i wouldn't go|i wouldn't let|i wouldn't risk|i wouldnt bother",
        "i wouldnt take|i wouldnt go|i wouldnt let|i wouldnt risk|save yourself|if i were you",
        "if it were me|my advice|i recommend|i suggest|do yourself a favour|do yourself a favor|trust me",
        "worth taking|worth trying|worth asking for|no need to|don't bother|dont bother|there's no need",
        "theres no need|go ahead|the one you want|is what you need|you'll be fine|youll be fine|it's safe to",
        "its safe to|it's fine to|its fine to|is safe|is totally safe|is perfectly safe",
        "you can absolutely|you can definitely|you can still|you can keep|you can carry on|you can safely",
        "you're fine to|youre fine to|you'll be ok|nothing stopping you|no reason not to|carry on with",
        "don't panic|dont panic|don't worry about|dont worry about|mark my words|believe me|perfectly fine to",
        "completely safe|totally fine|no need for|won't need|wont need|you don't need|you dont need",
        # reassurance that a risk is nothing, and telling people to go ahead or to skip care anyway
        "totally safe|perfectly fine|100 safe|zero risk|no risk|risk free|nothing to worry about",
        "book it|book one|book yourself in|go for it|you can skip|you could skip|could get away with",
        "can get away with|you can stay on|you can stop|you can come off|you'd be fine|youd be fine",
        # what I would do in their place (not "I'd like to know", "I'd been on it a year")
        *_product(WOULD, WOULD_DO),
        # first-person advice and its near variants; not listening to the professional
        "if it was me|if i was you|if it were my|if it was my|in your shoes|in your position",
        "i wouldn't do|i wouldn't have|i wouldn't fill|i wouldn't start|i wouldn't stop|i wouldn't get",
        "i wouldnt do|i wouldnt have|i wouldnt start|i wouldnt stop|i wouldnt get",
        "don't listen to|dont listen to|do not listen to|ignore your|ignore the|never mind what",
        "you can disregard|you can ignore|disregard the|disregard what|say no to|say yes to",
        "won't matter|wont matter|won't hurt|wont hurt|won't do any harm|can't hurt|cant hurt",
        "are safe|are perfectly safe|are totally safe|are completely safe|are fine to",
        # "might be worth skipping the scan", "give it three months": holding off or changing care
        "worth skipping|worth stopping|worth going up|worth switching|worth dropping|worth upping|worth halving",
        *_product(["give it", "giving it"], _phrases("a week|a month|a few weeks|a few months|another week")),
        *_product(["give it", "giving it"], _phrases("another month|two weeks|three months|six weeks|six months")),
        # Spanish, French, German, Portuguese, Italian, Dutch
        "toma|tome|tomad|prueba|deja de|déjalo|deje|evita|no vayas|no te operes|rechaza|tómate|tomate|haz",
        "hazte|deja|olvida|olvídate|duerme|no dejes|dile|dígale|ve al|no hace falta|yo que tú|yo en tu lugar",
        "si fuera tú|déjal*|tómal*",
        "si yo fuera tú|si fuera tu|yo q tu|yo que tu|no hagas caso|no escuches|es seguro|totalmente seguro",
        "sin miedo|sin riesgo|ningún riesgo|resérvalo|puedes seguir",
        "prends|prenez|essaie|essayez|arrête|arrêtes|arrêtez|évite|évites|évitez|n'allez pas|refuse|refuses",
        "refusez|dis|fais|faites|oublie|oubliez|laisse|laissez|vas y|allez y|n'hésite|dors|à ta place",
        "à votre place",
        "si j'étais toi|si j'étais vous|n'écoute pas|n'écoutez pas|sans danger|sans aucun danger|sans risque",
        "aucun risque|ça ne risque rien|c'est safe|réserve|réservez|inscris toi|ne t'embête pas|garde",
        "nimm|nehmen sie|probier|hör auf|hören sie auf|setz* * ab|setz* sie * ab|lass* * weg|lass* sie * weg",
        # not "macht", nearly always "it makes" ("Yoga macht mir Spaß"), seldom an order to several people
        "vermeide|geh nicht|mach|vergiss|vergessen sie|lass|lassen sie|sag|sagen sie|geh|schlaf",
        "an deiner stelle|an ihrer stelle|auf keinen fall|bloß nicht",
        "wenn ich du wäre|hör nicht auf|hören sie nicht auf|völlig sicher|kein risiko|unbedenklich|musst nicht",
        "brauchst nicht|vielleicht wäre es|kein problem|buch dir|musst du nicht",
        "experimente|pare de|pára de|evite|não vá|recuse|faz|faça|fazei|deixa|deixe|esquece|esqueça",
        "nem precisa|diz|diga|no teu lugar|se eu fosse você",
        "se eu fosse tu|não ligue|não escute|não dê ouvidos|é seguro|totalmente seguro|sem risco|sem medo",
        "prendi|prenda|prova|smetti|smetta|non andare|rifiuta*|dormi|fai|fate|dì|dille|digli|lascia",
        "lasciate|se fossi in te|al posto tuo|niente",
        "non ascoltare|non dare retta|sicurissimo|sicurissima|zero rischi|nessun rischio|vai tranquilla",
        "vai tranquillo|prenota|buttalo|buttala|non farti",
        "neem|probeer|stop met|gewoon stoppen|vermijd",
        "als ik jou was|luister niet naar|geen risico|helemaal veilig",
        # Polish
        "weź|weźcie|bierz|nie bierz|odstaw|przestań|spróbuj|nie idź|nie słuchaj|wyrzuć|zdejmij",
        "daj spokój|na twoim miejscu|zero ryzyka|bez ryzyka|bezpieczne|umawiaj się|umów się|śpij|rób",
        "niech|nie ma po co|szkoda czasu na",
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
CHANNELS = _phrases(
    "channel|page|video|videos|vid|vids|post|posts|reel|reels|content|account|profile|blog|site|website|link",
    "shop|store|podcast|stream|stuff|work|tiktok|instagram|insta|ig|youtube|yt|facebook|fb|twitter|bio|new",
    # what video sections promote besides: "share my music", "like my cover", "support my mixtape"
    "music|song|songs|track|tracks|cover|covers|mixtape|album|beats|rap|raps|art|vlog|vlogs|first|latest",
    # and what clinics and small sellers do: "visit my clinic", "support my small business", "watch my tutorial"
    "clinic|practice|studio|salon|spa|business|small business|company|brand|tutorial|tutorials|class|classes",
    "course|courses|workout|workouts|program|programme|app|book|ebook",
)
# Promotion of the writer's own channel, page or shop, in the forms video and social comment sections use.
SELF_PROMOTION = PhraseIndex.of(
    _phrases(
        # not "subscribed" alone: a reader saying they signed up to the site's newsletter
        "subscribe|subscribers|you subscribed|sub to|sub 4 sub|sub4sub|suscríbete|suscribete|inscreva|abonniert",
        "abonnez",
        "iscriviti|my channel|my youtube|my yt|my tiktok|my instagram|my insta|my ig|my page|my reel|my reels",
        "my video|my videos|my vid|my latest video|my latest reel|my blog|my shop|my store|my website|my site",
        "my link|my bio|link in bio|link in my bio|follow me|check out my",
        # these only with what is promoted: "it feels like my back is on fire", "I want to share my story", "the
        # physio will check my posture", "I had to visit my GP", "I try to watch my posture", "support my lower
        # back" are ordinary
        *_product(_phrases("like my|share my|check my|follow my|visit my|watch my|support my"), CHANNELS),
        "small creator|small youtuber|mi canal|meu canal|ma chaîne|mein kanal",
        "il mio canale|mi página|minha página|ma page|mon site|meine seite|visita mi|visite meu|go like",
        "leave a like|give it a like|smash that like|hit the like|hit subscribe",
    )
)
# Taking the conversation somewhere private, as scams and sellers do.
CONTACT_OFFER = PhraseIndex.of(
    _phrases(
        "telegram|whatsapp|whats app|wechat|signal group|dm me|message me|inbox me|pm me|text me|email me",
        "contact me|reach me|reach out to me|reach out to us|reach out to our|ask me for|ask for price|price list",
        "ask me and|on telegram|on whatsapp",
        "escríbeme|escribeme|mándame|chame no|me chama|écris moi|écrivez moi|schreib mir|scrivimi",
    )
)

# Suggestions that hedge or ask: "have you tried", "maybe worth", "could always try", "why not". With a
# medical term in the sentence they are directives in question form, which the directive cue leaves out.
SUGGESTIONS = PhraseIndex.of(
    _phrases(
        "have you tried|have u tried|ever tried|did you try|have you thought about|have you considered",
        "have you looked at|why not|why don't you|why dont you|what about|how about|maybe try",
        "perhaps try|maybe give|perhaps give|maybe get|maybe ask|maybe just|maybe worth|might be worth",
        "may be worth|could be worth|probably worth|worth a try|worth a go",
        "worth a shot|give * a try|give * a go|wouldn't hurt|wouldnt hurt|no harm in|surely you can",
        "surely you could|surely you don't|surely you dont|just a thought|only a thought|couldn't hurt",
        "couldnt hurt|can't hurt to|cant hurt to|reason you can't|reason you cant|reason not to|what's stopping you",
        "por qué no|por que no|has probado|has pensado|has intentado|prueba a|qué tal si|que tal si",
        "et si|pourquoi pas|pourquoi ne pas|as tu essayé|avez vous essayé|tu as essayé|vous avez essayé",
        "warum nicht|hast du schon|hast du mal|versuch doch|probier doch|wie wäre es",
        "por que não|já tentou|já experimentou|já pensou em",
        "hai provato|hai pensato|avete provato",
        "waarom niet|heb je al|heb je wel eens|probeer eens",
        "może spróbuj|a może|próbowałaś|próbowałeś|czemu nie|dlaczego nie",
    )
)
# "could always", "can always", "could try": suggestions when said to someone ("you could always ask for
# the patch") or followed by an imperative ("could always try heat"), not in a story ("I can always tell").
MODAL_SUGGESTIONS = PhraseIndex.of(_phrases("could always|can always|could try|could just try|can just try"))
MODAL_ADDRESSEES = frozenset({"you", "u", "ya", "she", "he", "they"})
MODAL_SPEAKERS = frozenset({"i", "we"})
# Conjunctions that ask a suggestion only when they open a question: "¿Y si dejas el tramadol?", not
# "tengo dolor y si camino..." ("and if"), "perché non" ("why not", and "because not" inside a sentence).
OPENING_SUGGESTIONS = frozenset({("y", "si"), ("e", "se"), ("et", "si"), ("perché", "non"), ("perche", "non")})
# In a question these directives are being asked about, not given: "Is acupuncture safe in pregnancy?",
# "Is it true you shouldn't lift?".
ASKED_DIRECTIVE_WORDS = frozenset(
    _phrases("safe|seguro|segura|sicher|sicuro|sicura|bezpieczne|veilig|shouldn't|shouldnt")
)
# Treatments and doses that open a bare instruction ("Ice 20 min", "Gabapentin 600mg at bedtime"); not
# body parts, care or time ("Pain for 3 weeks", "Hospital visit yesterday", "Back in 2019").
TREATMENTS = PhraseIndex.of(
    _phrases(
        "ibuprofen|naproxen|aleve|advil|motrin|nurofen|brufen|tylenol|paracetamol|acetaminophen|aspirin|codeine",
        "co codamol|codamol|tramadol|oxycodone|morphine|fentanyl|opioid|opioids|gabapentin|pregabalin|lyrica",
        "amitriptyline|duloxetine|diazepam|valium|muscle relaxant|muscle relaxants|cyclobenzaprine|diclofenac",
        "voltaren|celecoxib|meloxicam|steroid|steroids|prednisolone|prednisone|cortisone|lidocaine|melatonin",
        "patch|patches|tablet|tablets|pill|pills|capsule|capsules|meds|medication|painkiller|painkillers",
        "anti inflammator*|antiinflammator*|nsaid|nsaids|vitamin *|magnesium|turmeric|curcumin|cbd|arnica",
        "glucosamine|calcium|collagen|b12|d3|k2|fish oil|supplement|supplements|gummy|gummies|epsom",
        "ice|heat|heating pad|hot water bottle|bed rest|stretch*|exercise|exercises|inversion|traction|brace",
        "massage|massages|acupuncture|cupping|yoga|pilates|crack*|pelvic tilt*|mckenzie",
        "ibuprofeno|ibuprofène|paracétamol|doliprane|paracetamolo|ibuprofene|calpol|dorflex|pijnstiller*",
        "médicament*|medicamento*|medikament*|pastill*|comprim*|tablett*|tabletki|tabletkę|zastrzyk*",
        "cortisona|kortison|masaje|masajes|massaggio|massaggi|massagem|massagens|masaż|agopuntura|acupuntura",
        "akupunktur|hielo|glace|ghiaccio|gelo|eis|estiramiento*|étirement*|dehnung*",
    )
)
# When to do it: with a dose or a number, a sentence that opens with a treatment is a bare instruction
# ("Gabapentin 600mg at bedtime.", "Ice 20 min, then heat").
TIMING = PhraseIndex.of(
    _phrases(
        "hour|hours|hr|hrs|minute|minutes|min|mins|day|days|daily|night|nightly|nights|bedtime|overnight",
        "morning|mornings|evening|evenings|week|weeks|twice|once|month|months|before bed|after meals",
        "al día|por día|par jour|pro tag|täglich|al giorno|per dag|dziennie|noche|nuit|nacht|notte",
    )
)
# Promotion that names no link: referral and team-building pitches, "look it up", invite codes, apps and
# podcasts on their platforms, a handle to follow.
REFERRALS = PhraseIndex.of(
    _phrases(
        "ask me how|building a team|build a team|join my team|joining a team|invite code|referral code",
        "promo code|discount code|my code|use code|look him up|look her up|look them up|google it",
        "just google|app store|play store|google play|etsy|linktree|spotify|apple podcasts|my podcast|our podcast",
        "my pod|our pod|a podcast for|new episode of my|new episode of our|latest episode|your podcasts",
        "on ig|on insta|on instagram|on tiktok|my profile|in my profile|on my profile|send me a message",
        "código|convite|parrainage|empfehlungscode|codice invito|kod polecający",
    )
)


def sentences(text: str) -> list[str]:
    return [s.strip() for s in SENTENCE_SPLIT_RE.split(text) if s and s.strip()]


ELISION_RE = re.compile(r"\b([ld])'")  # l'ernia, d'ibuprofène: the word after the article is what counts


def words_of(sentence: str) -> list[str]:
    # The sentence's tokens: lower-cased, "’" read as "'", "&" as a space, "l'" and "d'" split off.
    # No token holds whitespace, and nothing that makes them (lower(), the replacements, ELISION_RE's \b)
    # looks past the whitespace around a word, so a sentence's tokens are its words', kept per word.
    return list(chain.from_iterable(map(_WORD_TOKENS.__getitem__, sentence.split())))


def _tokens_of_word(word: str) -> tuple[str, ...]:
    text = word.lower().replace("’", "'").replace("&", " ")
    return tuple(TOKEN_RE.findall(ELISION_RE.sub(r"\1 ", text) if "'" in text else text))


_WORD_TOKENS = _TokenCache(_tokens_of_word)


# --- token flags ---------------------------------------------------------------------------------
# Most words begin no phrase of any list, yet walking each list over a sentence looks at every word
# again, about ten times per sentence. So each distinct token is looked up in all the lists once, into an
# int of flags (four bits per list, and four more: doses, numbers, units, a character repeated), and
# kept: a sentence then costs one dictionary lookup per token and one OR of the flags. A list whose
# "alone" bit is in that OR has matched; one with no "start" bit, or no token that could go on from a
# start, is skipped; the trie is walked only from the tokens that may begin a phrase. The flags come from
# PhraseIndex.may_start, .is_phrase, .second_words and .loose_start, so the answers stay those of the
# PhraseIndex methods (Words.found is PhraseIndex.found_in, and so on).


@dataclass(frozen=True, slots=True)
class Cue:
    """A phrase list and its four bits in a token's flags."""

    index: PhraseIndex
    start: int  # the token may begin a phrase: PhraseIndex.starts lists its position
    alone: int  # the token is a whole phrase by itself: any position holding it matches
    second: int  # the token is one of the index's second_words
    loose: int  # a longer phrase may begin at the token whatever word comes next (see loose_start)

    @property
    def goes_on(self) -> int:
        """The bits of which one must be present for a phrase other than a single word to match."""
        return self.second | self.loose

    def flags_of(self, token: str) -> int:
        index = self.index
        flags = self.start if index.may_start(token) else 0
        if index.is_phrase(token):
            flags |= self.alone
        if token in index.second_words:
            flags |= self.second
        if index.loose_start(token):
            flags |= self.loose
        return flags


def _cues(*indexes: PhraseIndex) -> tuple[Cue, ...]:
    return tuple(Cue(index, *(1 << (4 * k + bit) for bit in range(4))) for k, index in enumerate(indexes))


CUES = _cues(
    MEDICAL,
    IMPERATIVES,
    DIRECTIVES,
    DIAGNOSIS_LEADS,
    CONDITIONS,
    REFERRAL_LEADS,
    PROFESSIONALS,
    NARRATIVE,
    CURE_CLAIMS,
    SELF_PROMOTION,
    CONTACT_OFFER,
    SUGGESTIONS,
    TIMING,
    REFERRALS,
    MODAL_SUGGESTIONS,
    TREATMENTS,
)
(
    MEDICAL_CUE,
    IMPERATIVE_CUE,
    DIRECTIVE_CUE,
    DIAGNOSIS_LEAD_CUE,
    CONDITION_CUE,
    REFERRAL_LEAD_CUE,
    PROFESSIONAL_CUE,
    NARRATIVE_CUE,
    CURE_CLAIM_CUE,
    SELF_PROMOTION_CUE,
    CONTACT_OFFER_CUE,
    SUGGESTION_CUE,
    TIMING_CUE,
    REFERRAL_CUE,
    MODAL_SUGGESTION_CUE,
    TREATMENT_CUE,
) = CUES
DOSE_FLAG = 1 << 4 * len(CUES)  # "800mg"
NUMBER_FLAG = DOSE_FLAG << 1  # "800", a dose when a unit follows
UNIT_FLAG = DOSE_FLAG << 2  # "mg"
REPEAT_FLAG = DOSE_FLAG << 3  # the same character six times running: "aaaaaa"
REPEATED_CHAR_RE = re.compile(r"(.)\1{5}", re.DOTALL)
DRUG_FLAG = DOSE_FLAG << 4  # a word with a drug name's ending: "lansoprazole", "alendronate"
STRETCHED_FLAG = DOSE_FLAG << 5  # a letter three times running: "suuuper", "gooood"
FUNCTION_FLAG = DOSE_FLAG << 6  # a function word ("the", "and", "de", "und"): word salad has few
# Triple letters that are not stretched words: roman numerals ("grade III", "xxx" kisses), "hmmm", "mmm",
# a laugh in Brazilian Portuguese ("kkkk") and a www host ("www", "www2").
NOT_STRETCHED_RE = re.compile(r"x*(?:ix|iv|v?i{0,3})|h?m+|k+|www\w*")
STRETCHED_RE = re.compile(r"([^\W\d_])\1\1")
# Endings of generic drug names (INN stems), for words seven letters or longer.
DRUG_ENDINGS = tuple(
    _phrases(
        "azole|dronate|olol|pril|sartan|statin|oxetine|aline|iptyline|azepam|azolam|codone|morphone|profen",
        "coxib|fenac|cillin|mycin|cycline|floxacin|triptan|gliptin|formin|lukast|tidine|olone|isone|isolone",
        "amol|madol|abalin|pentin|caine|oxacin|dipine|afil|setron|prazole|tropium",
    )
)
FUNCTION_WORDS = frozenset(
    _phrases(
        "the|a|an|and|or|but|of|to|in|on|at|for|with|is|was|are|it|it's|i|i'm|you|my|your|this|that|not|so",
        "be|have|has|had|do|did|if|as|just|me|we|they|he|she|what|when|how|can|would|will",
        "u|ur|im|dont|its|ive|thats|cant",
        "el|la|los|las|y|de|que|en|es|un|una|por|para|con|no|mi|lo|se|le|les|et|du|des|est|je|pas|pour",
        "der|die|das|und|ist|ich|nicht|mit|zu|ein|eine|o|os|as|um|uma|é|eu|com|il|di|che|è|per|het|een",
        "en|ik|niet|van|i|w|nie|to|na|się|z|jest|och|att|det|som|e|dal|del|al|ao|do|da|nel|im|zum|auf",
        "our|their|from|by|about|them|his|her|us|were|been|am|there|than|who|which|after|into",
        "mir|mich|hat|habe|sie|es|wir|auch|aber|sich|den|dem|für|mein|ohne|non|ho|ha|ci|sono|io|anche|questo",
        "não|em|me|pelo|pela|pra|pro|meu|minha|ele|ela|tem|l|d|il|elle|on|nous|vous|ce|ça|sur|dans|au|aux",
        "pero|muy|su|sus|met|voor|mijn|ook|heeft|over|wij|je|zijn|jag|har|till|za|przy|że|ale|mnie|po|od|czy",
    )
)


def _not_stretched(token: str) -> bool:
    return NOT_STRETCHED_RE.fullmatch(token) is not None


def _is_function_word(token: str) -> bool:
    # A contraction holds a pronoun or an auxiliary: "i've", "don't", "that's", "c'est", "j'ai".
    return token in FUNCTION_WORDS or "'" in token


def token_flags(token: str) -> int:
    """The flags of one token (see above)."""
    flags = 0
    for cue in CUES:
        flags |= cue.flags_of(token)
    # A dose is "800mg", or "800" followed by "mg"; both begin with a digit, so nothing else needs checking.
    if DOSE_TOKEN_RE.fullmatch(token):
        flags |= DOSE_FLAG
    if token.isdigit():
        flags |= NUMBER_FLAG
    if token in DOSE_UNITS:
        flags |= UNIT_FLAG
    if REPEATED_CHAR_RE.search(token):
        flags |= REPEAT_FLAG
    if len(token) >= 7 and token.isalpha() and token.endswith(DRUG_ENDINGS):
        flags |= DRUG_FLAG
    if STRETCHED_RE.search(token) and not _not_stretched(token):
        flags |= STRETCHED_FLAG
    if _is_function_word(token):
        flags |= FUNCTION_FLAG
    return flags


_TOKEN_FLAGS = _TokenCache(token_flags)


@dataclass(frozen=True, slots=True)
class Words:
    """Tokens with their flags and the OR of those flags: what the cue tests read."""

    tokens: Sequence[str]
    flags: list[int]
    present: int

    @classmethod
    def of(cls, tokens: Sequence[str]) -> Words:
        flags = list(map(_TOKEN_FLAGS.__getitem__, tokens))
        return cls(tokens, flags, reduce(or_, flags, 0))

    def starts(self, cue: Cue) -> list[int]:
        """``cue.index.starts(tokens)``."""
        bit = cue.start
        if not self.present & bit:
            return []
        return [i for i, flags in enumerate(self.flags) if flags & bit]

    def may_match(self, cue: Cue) -> bool:
        """False when no phrase of the cue can be here; otherwise its positions must be walked."""
        present = self.present
        return bool(present & cue.start) and bool(present & (cue.alone | cue.goes_on))

    def found(self, cue: Cue) -> bool:
        """``cue.index.found_in(tokens)``."""
        if self.present & cue.alone:
            return True
        if not self.may_match(cue):
            return False
        # No token is a phrase alone, so a match needs a start whose next token may go on from it.
        flags, loose, second, last = self.flags, cue.loose, cue.second, len(self.flags) - 1
        for i in self.starts(cue):
            if (flags[i] & loose or (i < last and flags[i + 1] & second)) and cue.index.ends_at(self.tokens, i):
                return True
        return False

    def positions(self, cue: Cue) -> list[tuple[int, int]]:
        """``cue.index.positions(tokens)``."""
        if not self.may_match(cue):
            return []
        return [(i, end) for i in self.starts(cue) for end in cue.index.ends_at(self.tokens, i)]

    def phrase_at(self, cue: Cue, j: int) -> bool:
        """Whether a phrase of the cue starts at token ``j``: ``cue.index.ends_at(tokens, j)`` is not empty."""
        flags = self.flags[j]
        if flags & cue.alone:
            return True
        if not flags & cue.start:
            return False
        goes_on = flags & cue.loose or (j + 1 < len(self.flags) and self.flags[j + 1] & cue.second)
        return bool(goes_on) and bool(cue.index.ends_at(self.tokens, j))


def has_medical_term(tokens: Sequence[str]) -> bool:
    return _has_medical_term(Words.of(tokens))


def _has_medical_term(words: Words) -> bool:
    if words.found(MEDICAL_CUE) or words.present & (DOSE_FLAG | DRUG_FLAG):
        return True
    if not words.present & NUMBER_FLAG:
        return False
    flags = words.flags
    return any(flags[i] & NUMBER_FLAG and flags[i + 1] & UNIT_FLAG for i in range(len(flags) - 1))


# A French, Spanish or Italian verb that reads as an order alone is the speaker's own doing after these, or
# after one and a negation: "je prends de l'ibuprofène le soir", "yo tome", "io prendo", "je ne prends plus
# d'ibuprofène", "ik neem soms ibuprofen".
FIRST_PERSON = frozenset({"je", "yo", "io", "eu", "ich", "ik"})
NEGATIONS = frozenset({"ne", "no", "non", "não", "nao", "niet", "nie"})
# Nor is a one-word order after an object pronoun (an order takes it after, "déjalo", "tómalo", unless negative)
# or an article (then it is a noun): "el masaje me deja relajada", "non c'è nessuna prova che funzioni". Not "se":
# "se toma cada 8 horas" is an instruction.
NOT_AN_ORDER_AFTER = frozenset(
    _phrases(
        "me|te|le|les|lo|los|nos|os|lhe|lhes|mi|ti|ci|vi|gli|la|una|uno|un|nessuna|nessun|alguna|ninguna",
        "ogni|questa|quella|della|sua|mia|tua|nenhuma|uma|um|une|des|du|ein|eine|keine|kein",
    )
)
# The writer is the one who does it after "I ... just" or "we ... then": "I just take paracetamol when it
# flares", "On bad days I stay in bed and take paracetamol". Only within the clause: "I know it hurts, but
# just take the tablets" is an order.
WRITER_LEADS = frozenset({"just", "then", "and"})
WRITERS = frozenset({"i", "we", "i'll", "we'll"})  # not "I'm": "I'm a GP and just stop the metformin"
WRITER_REACH = 4  # words between the writer and the lead: "I usually just take", "I stay in bed and take"
ADDRESSEES = frozenset({"you", "u", "ya", "your"})
CLAUSE_BREAKS = frozenset({"but", "if", "so", "because", "cos", "or", "unless", "when"})
# "Never had a massage that helped", "Never needed painkillers", "Don't get me wrong", "Don't know why": the
# subject left out of a statement, not an order. Past forms by name: "never exceed" and "never feed" are orders.
NOT_ORDERED = frozenset(
    _phrases(
        "had|been|was|were|did|got|felt|thought|knew|heard|seen|saw|went|gone|took|taken|made|found|said|told",
        "needed|helped|worked|tried|used|wanted|liked|noticed|realised|realized|expected|happened|seemed",
        "managed|bothered|mattered|changed|lasted|stopped|lost|bought|slept|woke|came|became",
        "know|think|remember|understand|recall|mind|care",
    )
)
NEGATIVE_ORDERS = frozenset({"never", "don't", "dont"})
# "Faz dois anos", "faz uma semana", "faz 3 meses", "faz tempo": a time ago, where "faz uma caminhada" is an order.
TIME_AGO = frozenset(_phrases("anos|ano|meses|mês|mes|semanas|semana|dias|dia|horas|tempo"))
# An imperative whose object is the writer's own is someone's diary: "Do my physio exercises twice a day".
DIARY_OBJECTS = frozenset({"my", "mine", "myself"})


def has_directive(tokens: Sequence[str], reply: bool) -> bool:
    return _has_directive(Words.of(tokens), reply)


def _has_directive(words: Words, reply: bool) -> bool:
    tokens = words.tokens
    if words.found(DIRECTIVE_CUE) and any(
        not _not_an_order_here(tokens, start, end) for start, end in words.positions(DIRECTIVE_CUE)
    ):
        return True
    treatment_or_time: bool | None = None  # worked out once, for the first conditional imperative
    for i in words.starts(IMPERATIVE_CUE):
        previous = tokens[i - 1] if i else ","
        clause_start = previous in CLAUSE_MARKS or (reply and i == 1)
        if not (clause_start or previous in IMPERATIVE_LEADS) or not words.phrase_at(IMPERATIVE_CUE, i):
            continue
        if i + 1 < len(tokens) and tokens[i + 1] in DIARY_OBJECTS:
            continue  # "Take my naproxen with breakfast": a diary with the "I" left out, not an order
        if tokens[i] in NEGATIVE_ORDERS and _states_rather_than_orders(tokens, i):
            continue
        if previous in WRITER_LEADS and _the_writer_does_it(tokens, i - 1):
            continue
        # "hold on", "sit tight"; "up to three a day" is an amount, not "up the dose" (but a sentence opening
        # "Up to 8 tablets in 24 hours" is a dose to keep to)
        if tuple(tokens[i : i + 2]) in IMPERATIVE_IDIOMS and (i or tokens[i] != "up"):
            continue
        if tokens[i] not in CONDITIONAL_IMPERATIVES:
            return True
        if treatment_or_time is None:
            treatment_or_time = _names_treatment_or_time(words)
        if treatment_or_time:
            return True
    return False


def _not_an_order_here(tokens: Sequence[str], start: int, end: int) -> bool:
    """Whether the directive phrase at ``start`` follows "I" (perhaps with a negation between), an object
    pronoun or an article (one word only), or is Portuguese "faz" before a time ("faz dois anos": "two years ago")
    or Italian "niente" after "non": then it is the writer's doing, a third person's, a noun, a time or "nothing"."""
    word = tokens[start]
    if word == "faz" and not TIME_AGO.isdisjoint(tokens[start + 1 : start + 3]):
        return True
    if word == "niente" and "non" in tokens[:start]:  # "non mi ha fatto niente" is "nothing"; "niente alcol!" orders
        return True
    if not start:
        return False
    before = tokens[start - 1]
    earlier = tokens[start - 2] if start > 1 else ""
    if before in FIRST_PERSON or (before in NEGATIONS and earlier in FIRST_PERSON):
        return True
    if end - start > 1:  # a formula ("it's safe to") after "me" is still said to someone
        return False
    # a negative order keeps its pronoun in front: "ne te fais pas opérer", "não se deixe operar"
    return before in NOT_AN_ORDER_AFTER and not (earlier in NEGATIONS and tokens[max(start - 3, 0)] not in FIRST_PERSON)


def _states_rather_than_orders(tokens: Sequence[str], i: int) -> bool:
    """ "Never had ...", "Don't get me wrong", "Don't know why": the subject left out, a past or a thought."""
    following = tokens[i + 1 : i + 4]
    if not following:
        return False
    return following[0] in NOT_ORDERED or tuple(following) == ("get", "me", "wrong")


def _the_writer_does_it(tokens: Sequence[str], lead: int) -> bool:
    """Whether "I" or "we", a few words before the lead word ("just", "then", "and") in the same clause, is the
    subject it goes on with."""
    for token in reversed(tokens[max(lead - WRITER_REACH, 0) : lead]):
        if token in CLAUSE_MARKS or token in CLAUSE_BREAKS or token in ADDRESSEES:
            return False
        if token in WRITERS:
            return True
    return False


def _names_treatment_or_time(words: Words) -> bool:
    return (
        bool(words.present & (DOSE_FLAG | NUMBER_FLAG | DRUG_FLAG))
        or words.found(TREATMENT_CUE)
        or words.found(TIMING_CUE)
    )


def has_diagnosis(tokens: Sequence[str]) -> bool:
    return _has_diagnosis(Words.of(tokens))


def _has_diagnosis(words: Words) -> bool:
    leads = words.positions(DIAGNOSIS_LEAD_CUE)
    if not leads:
        return False
    conditions = [start for start, _ in words.positions(CONDITION_CUE)]
    return any(0 <= start - end <= DIAGNOSIS_GAP for _, end in leads for start in conditions)


def has_referral(tokens: Sequence[str]) -> bool:
    return _has_referral(Words.of(tokens))


def _has_referral(words: Words) -> bool:
    tokens = words.tokens
    for _, end in words.positions(REFERRAL_LEAD_CUE):
        if end < len(tokens) and words.phrase_at(PROFESSIONAL_CUE, end):
            return True
        if end + 1 < len(tokens) and tokens[end] in DETERMINERS and words.phrase_at(PROFESSIONAL_CUE, end + 1):
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


def looks_like_gibberish(text: str, words: Words | None = None) -> bool:
    """Keyboard mash, vowel-less strings, or the same word or letter over and over.

    The words judged are the runs of letters of the lower-cased text (WORD_RE). They are read from the
    text's sentence tokens (``words_of`` of each of ``sentences``; ``cue_tokens`` passes the Words it has),
    which hold every letter of the text, lower-cased as in the whole text (lower() looks at no context
    across whitespace, where sentences and words split), so what each token holds is worked out once.
    """
    if words is None:
        words = Words.of([token for sentence in sentences(text) for token in words_of(sentence)])
    if _may_repeat_a_letter(text, words) and REPEATED_LETTER_RE.search(text):
        return True
    if len(text) > GIBBERISH_MAX_CHARS:  # long texts are judged by their words, not as mash
        return False
    tokens = words.tokens
    # Summing the packed counts adds each field up: a short text has far fewer than 2**16 words.
    counts = sum(map(_GIBBERISH_COUNTS.__getitem__, tokens))
    letter_runs, long_words, no_vowels, mashed = (counts >> shift & 0xFFFF for shift in (0, 16, 32, 48))
    if not letter_runs:
        return False
    if no_vowels + mashed >= max(1, long_words // 3):
        return True
    return _one_word_repeated(list(chain.from_iterable(map(_LETTER_RUNS.__getitem__, tokens))))


def _may_repeat_a_letter(text: str, words: Words) -> bool:
    """False when REPEATED_LETTER_RE cannot match."""
    # Six letters alike lie in one token, lower-cased into six characters alike (REPEAT_FLAG), unless the
    # letter is "İ", which lower() turns into two characters, or "Σ", which it turns into "σ" or, ending a
    # word, "ς".
    return bool(words.present & REPEAT_FLAG) or "İ" in text or "Σ" in text


def gibberish_counts(token: str) -> int:
    """For looks_like_gibberish: how many words a token holds, long ones (4 letters or more), long ones with
    no vowel and long ones with a keyboard run, in four 16-bit fields."""
    words = WORD_RE.findall(token)
    long_words = [w for w in words if len(w) >= 4]
    no_vowels = sum(1 for w in long_words if VOWELS.isdisjoint(w))
    mashed = sum(1 for w in long_words if KEYBOARD_RUNS_RE.search(w))
    return len(words) | len(long_words) << 16 | no_vowels << 32 | mashed << 48


_GIBBERISH_COUNTS = _TokenCache(gibberish_counts)
_LETTER_RUNS: _TokenCache[list[str]] = _TokenCache(WORD_RE.findall)


def _one_word_repeated(words: list[str]) -> bool:
    """At least four words, half of them one word."""
    if len(words) < 4:
        return False
    # A word making up half of n words leaves at most n/2 others: more distinct words rule it out uncounted.
    if 2 * (len(set(words)) - 1) > len(words):
        return False
    return Counter(words).most_common(1)[0][1] / len(words) >= 0.5


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
    every_flag: list[int] = []
    every_present = 0
    advice_found: set[str] = set()
    for sentence in sentences(text):
        tokens = words_of(sentence)
        if not tokens:
            continue
        words = Words.of(tokens)
        every_word += tokens
        every_flag += words.flags
        every_present |= words.present
        reply = sentence.startswith("@")
        openings += opening_token(tokens, reply)
        found_here = _sentence_cues(words, reply, question=sentence.endswith("?"))
        medical_directives += "zzdirmed" in found_here
        found.update(found_here)
        advice_found.update(cue for cue in found_here if cue in LONG_ADVICE_CUES)
    every = Words(every_word, every_flag, every_present)
    found.update(_comment_cues(text, every))
    if len(every_word) >= LONG_COMMENT_WORDS:
        # In a long story one advice sentence is a small share of the words; its own token lets it count.
        found.update(f"zzlong{cue[2:]}" for cue in advice_found)
    tokens = sorted(found)
    if medical_directives > 1:
        tokens.append("zzdirmedmany")
    return tokens + openings


LONG_COMMENT_WORDS = 60
LONG_ADVICE_CUES = frozenset({"zzdirmed", "zzdiag", "zzsuggestmed", "zzbaremed"})


def _sentence_cues(words: Words, reply: bool, question: bool) -> list[str]:
    """The cues of one sentence."""
    found = []
    medical = _has_medical_term(words)
    directive = _has_directive(words, reply)
    if directive and not question:
        found.append("zzdirmed" if medical else "zzdir")
    if not question and _has_diagnosis(words):
        found.append("zzdiag")
    if _has_referral(words):
        found.append("zzrefer")
    if question and medical:
        found.append("zzqmed")
    if not medical:
        return found
    narrative = words.found(NARRATIVE_CUE)
    if not directive and narrative:
        found.append("zznarrmed")
    if _has_suggestion(words, reply, question):
        found.append("zzsuggestmed")
    if not question and not narrative and _is_bare_instruction(words, reply):
        found.append("zzbaremed")
    return found


def _has_suggestion(words: Words, reply: bool, question: bool) -> bool:
    """A suggestion hedged or asked: "have you tried...", "you could always...", "¿Y si dejas...?", or a
    question holding a directive other than one asked about ("is it safe", "you shouldn't")."""
    if words.found(SUGGESTION_CUE):
        return True
    tokens = words.tokens
    for start, end in words.positions(MODAL_SUGGESTION_CUE):
        before = tokens[start - 1] if start else ""
        if before in MODAL_ADDRESSEES:
            return True
        if before not in MODAL_SPEAKERS and end < len(tokens) and words.phrase_at(IMPERATIVE_CUE, end):
            return True
    if not question:
        return False
    first = 1 if reply and len(tokens) > 2 else 0
    if tuple(tokens[first : first + 2]) in OPENING_SUGGESTIONS:
        return True
    return any(ASKED_DIRECTIVE_WORDS.isdisjoint(tokens[start:end]) for start, end in words.positions(DIRECTIVE_CUE))


OPENING_WORDS = 2  # "Two naproxen now", "20 mins of ice": a count, then the treatment
COUNT_WORDS = frozenset(
    _phrases("one|two|three|four|five|half|dos|tres|deux|trois|zwei|drei|dois|duas|três|due|tre|twee|drie|dwie|trzy")
)


# A sentence in which the writer names themselves tells of their own treatment, not the reader's: "Stretching
# every morning changed my life", "Pregabalin 75mg twice daily was my titration schedule". Not "we" or "our":
# "our lamp at 5cm for 60 minutes, three times a day" is a shop's instruction.
WRITER_SELF = frozenset({"i", "i'm", "i've", "i'd", "my", "me", "mine", "myself"})
# Unless the writer is named only to vouch for the instruction: "Naproxen 500mg twice daily, in my experience",
# "Prednisolone 40mg for 5 days, my two cents".
WRITER_VOUCHING = tuple(
    tuple(phrase.split())
    for phrase in (
        "in my humble opinion",
        "in my opinion",
        "in my experience",
        "in my view",
        "in my book",
        "my two cents",
        "my 2 cents",
        "my advice",
        "my tip",
        "my recommendation",
        "trust me",
        "believe me",
        "take it from me",
        "if you ask me",
    )
)


def _writer_named(tokens: Sequence[str]) -> bool:
    """Whether the writer names themselves other than to vouch for what the sentence says (WRITER_VOUCHING)."""
    at = 0
    while at < len(tokens):
        vouching = next((len(p) for p in WRITER_VOUCHING if tuple(tokens[at : at + len(p)]) == p), 0)
        if vouching:
            at += vouching
            continue
        if tokens[at] in WRITER_SELF:
            return True
        at += 1
    return False


def _is_bare_instruction(words: Words, reply: bool) -> bool:
    """The sentence opens with a treatment or a dose and says how much or when: "Ice 20 min, then heat"."""
    if not WRITER_SELF.isdisjoint(words.tokens) and _writer_named(words.tokens):
        return False
    first = 1 if reply and len(words.tokens) > 1 else 0
    opens_with_treatment = any(
        words.flags[j] & (DOSE_FLAG | DRUG_FLAG) or words.phrase_at(TREATMENT_CUE, j)
        for j in range(first, min(first + OPENING_WORDS, len(words.tokens)))
        if j == first or words.flags[first] & NUMBER_FLAG or words.tokens[first] in COUNT_WORDS
    )
    how_much = words.present & (DOSE_FLAG | NUMBER_FLAG) or words.found(TIMING_CUE)
    return bool(opens_with_treatment) and bool(how_much)


# "Check out my earlier reply", "check out my comment above": the writer points to the thread, not a channel.
THREAD_WORDS = frozenset(_phrases("comment|comments|reply|replies|answer|answers|question|questions"))


def _promotes(words: Words) -> bool:
    """Whether a self-promotion phrase found is not "check out my" pointing to the thread."""
    tokens = words.tokens
    for start, end in words.positions(SELF_PROMOTION_CUE):
        if tuple(tokens[start:end]) != ("check", "out", "my") or THREAD_WORDS.isdisjoint(tokens[end : end + 2]):
            return True
    return False


def _comment_cues(text: str, every_word: Words) -> list[str]:
    """The cues of the comment as a whole; phrases may run across its sentences."""
    found = []
    if text.lstrip().startswith("@") or text.lower().lstrip().startswith("replying to"):
        found.append("zzreply")
    if looks_like_gibberish(text, every_word):
        found.append("zzgibberish")
    if every_word.found(CURE_CLAIM_CUE):
        found.append("zzcure")
    if every_word.found(SELF_PROMOTION_CUE) and _promotes(every_word):
        found.append("zzpromo")
    if every_word.found(CONTACT_OFFER_CUE):
        found.append("zzcontact")
    if every_word.found(REFERRAL_CUE):
        found.append("zzreferral")
    if "@" in text and _has_channel_handle(text):
        found.append("zzhandle")
    found += _repetition_cues(text, every_word)
    return found


# A social handle presented as an account to follow ("@liftwithlumbago on IG", "follow @x", "Telegram: @x");
# naming another commenter ("I agree with @Maria_K", "cheers @Moira") is how replies are written.
HANDLE_RE = re.compile(r"(?<!\w)@[A-Za-z0-9_][\w.]{2,}")  # not an e-mail address's "@gmail.com"
PLATFORMS = (
    r"instagram|insta|ig|tiktok|tik tok|youtube|yt|twitter|telegram|tg|snapchat|threads|facebook|fb|whatsapp"
    r"|twitch|direct|my page|my channel|my account|reels?|dm"
)
# Before a handle: a platform or being asked to follow ("follow @x", "Insta @x", "venez me suivre @x");
# after it, a platform ("@x on insta"). "@Kev please nobody follow that" is a reply.
CHANNEL_BEFORE_RE = re.compile(rf"\b(?:{PLATFORMS}|follow\w*|folgt|suivez|suivre|s[ií]ganme|sigam|seguimi|inscreve)\b")
CHANNEL_AFTER_RE = re.compile(rf"\b(?:{PLATFORMS})\b")
HANDLE_CONTEXT = 40  # characters either side of a handle that are searched for channel words


def _has_channel_handle(text: str) -> bool:
    """A handle with a platform or "follow" close by; each handle's context is bounded, so this is linear."""
    for match in HANDLE_RE.finditer(text):
        start, end = match.span()
        if CHANNEL_BEFORE_RE.search(text[max(0, start - HANDLE_CONTEXT) : start].lower()):
            return True
        if CHANNEL_AFTER_RE.search(text[end : end + HANDLE_CONTEXT].lower()):
            return True
    return False


NO_LETTERS_MIN_CHARS = 8  # "👍", "🙏🙏" are reactions; "!!!!!!! ??????" or a row of emoji and digits is not
SHORT_TEXT_WORDS = (6, 40)  # word salad and repetition are judged on texts of this many words
# The most distinct words a repetitive text has, as a share of its words: under six words only one word
# over and over counts ("suuuper suuuper suuuper"), from six on up to 60% ("best of the best of the best").
REPETITIVE_SHARE = (0.34, 0.6)


def _repetition_cues(text: str, words: Words) -> list[str]:
    """Spam that is not a sentence: few distinct words, stretched letters, no function words, no letters."""
    found = []
    if words.present & STRETCHED_FLAG:
        found.append("zzstretched")
    if len(words.tokens) > 2 * SHORT_TEXT_WORDS[1]:  # long texts are none of these (punctuation is a token)
        return found
    letter_tokens = [token for token in words.tokens if token[0].isalpha()]
    if not letter_tokens and len(text.strip()) >= NO_LETTERS_MIN_CHARS:
        found.append("zznoletters")
    low, high = SHORT_TEXT_WORDS
    if (
        3 <= len(letter_tokens) <= high
        and len(set(letter_tokens)) / len(letter_tokens) <= REPETITIVE_SHARE[len(letter_tokens) >= low]
    ):
        found.append("zzrepetitive")
    if low <= len(letter_tokens) <= high:
        function_words = sum(1 for flags in words.flags if flags & FUNCTION_FLAG)
        if function_words / len(letter_tokens) < 0.15:
            found.append("zznofunction")
    return found
