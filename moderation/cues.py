"""Sentence-level cues of advice-giving, aggregated to marker tokens for the whole comment.

A linear model over words sees "ibuprofen" both in "I took ibuprofen" and in "take ibuprofen"; what makes
the second one advice is that a directive and a medical term share a sentence, or that someone else is
being diagnosed. These cues put that interaction into tokens the classifiers can weigh. They cover
English and the most common forms in Spanish, French, German, Portuguese, Italian and Dutch.
"""

from __future__ import annotations

import re

SENTENCE_SPLIT_RE = re.compile(r"(?<=[.!?;…])\s+|\n+|\s+-\s+|(?<=\))\s+(?=[A-Z@])")

MEDICAL_RE = re.compile(
    r"\b(\d+\s?(mg|mcg|iu|ml|g)\b|ibuprofen|naproxen|aleve|advil|motrin|nurofen|brufen|tylenol|paracetamol|"
    r"acetaminophen|aspirin|codeine|co-codamol|tramadol|oxycodone|morphine|fentanyl|opioids?|gabapentin|"
    r"pregabalin|lyrica|amitriptyline|duloxetine|diazepam|valium|muscle relaxants?|cyclobenzaprine|"
    r"diclofenac|voltaren|celecoxib|meloxicam|steroids?|prednisolone|prednisone|cortisone|injections?|"
    r"epidural|patch|tablets?|pills?|capsules?|meds?|medication|medicine|painkillers?|anti-?inflammator\w*|"
    r"nsaids?|vitamin \w+|magnesium|turmeric|curcumin|cbd|arnica|glucosamine|calcium|supplements?|"
    r"dose|dosage|surgery|operation|op|fusion|discectomy|microdiscectomy|mri|x-?ray|scan|physio\w*|"
    r"chiro\w*|adjust\w*|manipulat\w*|crack\w*|stretch\w*|exercises?|inversion|traction|brace|"
    r"ice|heat|hot water bottle|bed rest|sciatica|disc|hernia\w*|slipped|piriformis|arthritis|"
    r"osteoporosis|fracture|spasm|nerve|spine|spinal|vertebra\w*|pelvi\w*|sacroiliac|si joint|"
    r"pregnan\w*|weeks|pain|sore|ache|back|neck|hip|leg|"
    r"médicament\w*|medicamento\w*|medikament\w*|farmac\w*|cirug\w*|chirurg\w*|opera\w*|pastill\w*|"
    r"comprim\w*|tablett\w*|schmerz\w*|dolor\w*|douleur\w*|dolore|dor|ernia|hernie|hérnia|rugpijn|ibuprofeno|"
    r"pijnstillers?|ibuprofène|paracétamol|doliprane|paracetamolo)\b",
    re.IGNORECASE,
)

DIRECTIVE_RE = re.compile(
    r"(^|[,:;]\s*|\bjust\s+|\bthen\s+|\band\s+|\bso\s+|\bplease\s+|^@\S+\s+)"
    r"(take|try|stop|quit|start|skip|avoid|ditch|bin|drop|double|halve|use|rub|put|apply|crack|pop|go|get|"
    r"ask (them|your doc\w*|for)|tell (them|your|her|him)|refuse|cancel|come off|wean|switch|swap|"
    r"stay|rest|walk|sleep|do|don'?t|never|keep|stick|push|throw|lie|hang|book|buy|order|eat|drink|"
    r"forget|ignore|insist|demand|increase|decrease|up|cut)\b"
    r"|\b(you|u|ya|she|he|they|your (mum|mom|dad|husband|wife|partner))\s+(should|shouldn'?t|must|need to|"
    r"needs to|have to|has to|ought to|want to|wanna|gotta|can just|could just|could always|might want to|"
    r"don'?t need|do not need|just need)\b"
    r"|\b(i wouldn'?t (bother|take|go|let|risk)|save yourself|i'?d (just )?(skip|stop|take|go|try|avoid|ask|bin|"
    r"ditch|refuse|get)|i'?d|i would|i'd just|if i were you|if it were me|my advice|i recommend|i'd recommend|"
    r"i suggest|i'd suggest|do yourself a favou?r|trust me|worth (taking|trying|asking for)|"
    r"no need to|don'?t bother|there'?s no need|go ahead|the one you want|is what you need|"
    r"you'?ll be fine|it'?s (safe|fine) to|is (totally |perfectly )?safe)\b"
    r"|\b(toma|tome|tomad|prueba|deja de|déjalo|deje|evita|no vayas|no te operes|rechaza|"
    r"prends|prenez|essaie|essayez|arrête[sz]?|arrêtez|évite[sz]?|n'allez pas|refuse[sz]?|"
    r"nimm|nehmen sie|probier|hör auf|hören sie auf|setz\w* (sie )?\w* ab|lass\w* (sie )?\w* weg|"
    r"vermeide|geh nicht|tome|toma|experimente|pare de|pára de|evite|não vá|recuse|"
    r"prendi|prenda|prova|smetti|smetta|evita|non andare|rifiuta\w*|déjal\w*|tómal\w*|"
    r"neem|probeer|stop met|gewoon stoppen|vermijd|"
    r"tómate|tomate|haz|hazte|deja|olvida|olvídate|duerme|no dejes|dile|dígale|ve al|no hace falta|"
    r"yo que tú|yo en tu lugar|si fuera tú|"
    r"dis|fais|faites|oublie|oubliez|laisse|laissez|vas-y|allez-y|n'hésite|dors|à ta place|à votre place|"
    r"mach|macht|vergiss|vergessen sie|lass|lassen sie|sag|sagen sie|geh|schlaf|an deiner stelle|"
    r"an ihrer stelle|auf keinen fall|bloß nicht|"
    r"dormi|fai|fate|di'|dì|dille|digli|lascia|lasciate|se fossi in te|al posto tuo|niente|"
    r"faz|faça|fazei|deixa|deixe|esquece|esqueça|nem precisa|diz|diga|no teu lugar|se eu fosse você)\b",
    re.IGNORECASE | re.MULTILINE,
)

DIAGNOSIS_RE = re.compile(
    r"\b(that'?s|thats|that is|it'?s|its|sounds like|sounds more like|you'?ve (got|just)|you have|you've|"
    r"she'?s got|he'?s got|classic|definitely|almost certainly|probably|i reckon|that crunching is|"
    r"es una?|c'est une?|das ist|é uma?|è una?|dat is)\s+(\w+\s+){0,3}?"
    r"(sciatica|piriformis|herniat\w*|hernia\w*|slipped disc|disc|si joint|sacroiliac|arthritis|"
    r"spondylo\w*|stenosis|fracture|muscle|strain|sprain|pulled|nerve|sprain|spd|pelvic girdle|"
    r"kidney|shingles|fibro\w*|ankylosing|scoliosis|degenerat\w*|ciática|sciatique|ischias|ciatica|"
    r"hernie|ernia|hérnia|hexenschuss|lumbago)",
    re.IGNORECASE,
)

REFERRAL_RE = re.compile(
    r"\b(see|ask|talk to|speak to|check with|get (it|that|this) (checked|looked at)|go to|call|ring|"
    r"book in with|mention it to|consulta|consulte[sz]?|va voir|allez voir|geh zum|gehen sie zum|"
    r"procure|vá ao|chiedi al|vai dal|ga naar)\s+(a |an |your |the |un |una |tu |ton |ta |votre |"
    r"deinen |ihren |seu |sua |il |al |de |je )?"
    r"(gp|doctor|doc|physio\w*|physical therapist|pt|midwife|pharmacist|consultant|specialist|nurse|"
    r"a&e|er|emergency|111|999|911|médico|médecin|arzt|ärztin|medico|huisarts|fisio\w*|kiné\w*)\b",
    re.IGNORECASE,
)

NARRATIVE_RE = re.compile(
    r"\b(i|i'm|i've|i was|i had|i took|i take|i'm on|i've been|my (gp|doctor|physio|surgeon|consultant|"
    r"midwife|back|husband|wife|mum|mom|dad)|me|mine|we|was prescribed|they gave me|had me|put me on|"
    r"yo|me recetó|mi médico|je|j'ai|mon médecin|ich|mein arzt|eu|meu médico|io|il mio medico|ik)\b",
    re.IGNORECASE,
)


VOWELS = set("aeiouyàáâäèéêëìíîïòóôöùúûüæœå")
KEYBOARD_RUNS = (
    "qwer",
    "wert",
    "asdf",
    "sdfg",
    "dfgh",
    "fghj",
    "ghjk",
    "hjkl",
    "zxcv",
    "xcvb",
    "cvbn",
    "vbnm",
    "uiop",
    "yuio",
    "tyui",
    "rtyu",
    "qaz",
    "wsx",
    "edc",
    "rfv",
    "tgb",
    "yhn",
    "ujm",
    "ikl",
    "mnb",
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
    words = [w.lower() for w in WORD_RE.findall(text)]
    if not words:
        return False
    long_words = [w for w in words if len(w) >= 4]
    no_vowels = sum(1 for w in long_words if not VOWELS & set(w))
    mashed = sum(1 for w in long_words if any(run in w for run in KEYBOARD_RUNS))
    repeated_word = len(words) >= 4 and max(words.count(w) for w in set(words)) / len(words) >= 0.5
    return (no_vowels + mashed) >= max(1, len(long_words) // 3) or repeated_word


def sentences(text: str) -> list[str]:
    return [s.strip() for s in SENTENCE_SPLIT_RE.split(text) if s and s.strip()]


OPENING_WORD_RE = re.compile(r"[^\W\d_][\w']*", re.UNICODE)


def opening_tokens(sentence: str) -> list[str]:
    """The first word of a sentence (past an @reply), as a token: imperatives live there in every language."""
    words = OPENING_WORD_RE.findall(sentence.lstrip("@").split(" ", 1)[-1] if sentence.startswith("@") else sentence)
    return [f"zzs{words[0].lower()}"] if words else []


def cue_tokens(text: str) -> list[str]:
    """Marker tokens for the cues found, once each per comment (with a count for directives)."""
    found: set[str] = set()
    medical_directives = 0
    openings: list[str] = []
    for sentence in sentences(text):
        openings += opening_tokens(sentence)
        medical = MEDICAL_RE.search(sentence) is not None
        directive = DIRECTIVE_RE.search(sentence) is not None
        question = sentence.rstrip().endswith("?")
        if directive and not question:
            if medical:
                medical_directives += 1
                found.add("zzdirmed")
            else:
                found.add("zzdir")
        if DIAGNOSIS_RE.search(sentence) and not question:
            found.add("zzdiag")
        if REFERRAL_RE.search(sentence):
            found.add("zzrefer")
        if question and medical:
            found.add("zzqmed")
        if medical and NARRATIVE_RE.search(sentence) and not directive:
            found.add("zznarrmed")
    if text.lstrip().startswith("@") or text.lower().lstrip().startswith("replying to"):
        found.add("zzreply")
    if looks_like_gibberish(text):
        found.add("zzgibberish")
    tokens = sorted(found)
    if medical_directives > 1:
        tokens.append("zzdirmedmany")
    return tokens + openings
