"""Texts per sound: title, instrument, category, source, timbre words derived from measured descriptors, and the
paper's synthetic combinations ("bright Synth Lead"); plus the words that go with a random training EQ.

Descriptor thresholds (measured on the training split's original notes: the quartiles and tails named below):

| word | rule |
|---|---|
| bright / dark | brightness = spectral centroid / f0 (harmonic numbers) > 3.5 (top quartile) / < 1.3 (bottom quartile); only for notes with at least 6 harmonics below Nyquist (a high note's centroid says little) |
| percussive | attack <= 10 ms and level 0.5 s before note-off at least 18 dB below the peak |
| soft attack | attack (10% -> 90% of peak) >= 200 ms |
| sustained / decaying | level 0.5 s before note-off within 4.5 dB of the peak / more than 30 dB below it |
| short release / long release | after note-off, 30 dB of decay within 100 ms / not within 1 s |
| noisy | median spectral flatness of the held part > 0.1 |

Direction words (``DIRECTION_WORDS``): what a word asks an EQ to do to a measured descriptor, used by the trainer's
direction loss (see ``training/trainer.py``): the spectral centroid up for "bright", down for "warm", the share of
energy below 250 Hz up for "bass-heavy", down for "thin".

Random-EQ words (``EQ_ARCHETYPES``): a training clip whose spectrum got a random EQ of one archetype gets that
archetype's words, and loses its measured bright/dark words, which the EQ may have made untrue.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TRAILING_INDEX = re.compile(r"[\s_-]*\d+$")


def strip_index(title: str) -> str:
    """"Pad 2" -> "Pad" (the paper strips trailing indices from titles)."""
    stripped = _TRAILING_INDEX.sub("", title.strip())
    return stripped or title.strip()


BRIGHT_ABOVE, DARK_BELOW, MIN_HARMONICS = 3.5, 1.3, 6
PERCUSSIVE_ATTACK_S, PERCUSSIVE_SUSTAIN_DB = 0.01, -18.0
SOFT_ATTACK_S = 0.2
SUSTAINED_ABOVE_DB, DECAYING_BELOW_DB = -4.5, -30.0
SHORT_RELEASE_S, LONG_RELEASE_S = 0.1, 1.0
NOISY_FLATNESS = 0.1

BRIGHTNESS_WORDS = ("bright", "dark")


def descriptor_words(d: dict[str, str | float]) -> list[str]:
    """Timbre words of one note from its measured descriptors (see the table above)."""
    def f(key: str) -> float:
        return float(d.get(key, "nan") or "nan")

    words = []
    if f("harmonics_below_nyquist") >= MIN_HARMONICS:
        if f("brightness") > BRIGHT_ABOVE:
            words.append("bright")
        elif f("brightness") < DARK_BELOW:
            words.append("dark")
    if f("attack_s") <= PERCUSSIVE_ATTACK_S and f("sustain_db") < PERCUSSIVE_SUSTAIN_DB:
        words.append("percussive")
    elif f("attack_s") >= SOFT_ATTACK_S:
        words.append("soft attack")
    if f("sustain_db") > SUSTAINED_ABOVE_DB:
        words.append("sustained")
    elif f("sustain_db") < DECAYING_BELOW_DB:
        words.append("decaying")
    if f("release_s") <= SHORT_RELEASE_S:
        words.append("short release")
    elif f("release_s") >= LONG_RELEASE_S:
        words.append("long release")
    if f("flatness") > NOISY_FLATNESS:
        words.append("noisy")
    return words


def plain_texts(title: str, instrument: str, category: str) -> list[str]:
    """The plain recipe's texts (the training issue's quick experiment): what the sound is called and nothing else
    (title, title without its index, "title category", category, instrument); no timbre words, no descriptions."""
    t = strip_index(title)
    return list(dict.fromkeys(x for x in (title, t, f"{t} {category}", category, instrument) if x))


def sound_texts(title: str, instrument: str, category: str, words: list[str]) -> list[str]:
    """Every text that describes one sound (deduplicated, order kept): title, title without its index, "title
    category", category, instrument, timbre words and their combinations, and plain-language descriptions. The
    source (a soundfont's or synth's name) is not a text: it says nothing about the sound on another source."""
    t = strip_index(title)
    texts = plain_texts(title, instrument, category)
    for w in words:
        texts += [w, f"{w} {category}", f"{w} {t}"]
    texts += descriptions(category, instrument, words)
    return list(dict.fromkeys(x for x in texts if x))


def sample_texts(texts: list[str], title: str, category: str, rng, count: int) -> list[str]:
    """A few of one sound's texts for one training step: its title (as named or without its index), its category
    with probability 0.5, and random others up to ``count``. Title and category are then drawn far more often than
    any of the ~15 other texts, which otherwise dilute their pull (the last run's diagnosis)."""
    t = strip_index(title)
    chosen = [title if rng.random() < 0.5 else t]
    if category and rng.random() < 0.5:
        chosen.append(category)
    rest = [x for x in texts if x not in chosen]
    need = max(0, count - len(chosen))
    if rest and need:
        chosen += [rest[k] for k in rng.choice(len(rest), min(need, len(rest)), replace=False)]
    return chosen


@dataclass(frozen=True)
class EQArchetype:
    """A family of random EQs: shelves drawn from these ranges (Hz, dB), and the words that describe the result."""

    name: str
    low_shelf: tuple[tuple[float, float], tuple[float, float]] | None
    high_shelf: tuple[tuple[float, float], tuple[float, float]] | None
    words: tuple[str, ...]


DIRECTION_WORDS = (
    ("bright", "centroid", +1), ("brighter", "centroid", +1), ("crisp", "centroid", +1),
    ("dark", "centroid", -1), ("darker", "centroid", -1), ("muffled", "centroid", -1),
    ("warm", "centroid", -1), ("warmer", "centroid", -1),
    ("bass-heavy", "low_share", +1), ("boomy", "low_share", +1), ("more bass", "low_share", +1),
    ("thin", "low_share", -1), ("thinner", "low_share", -1),
)
LOW_SHARE_CUTOFF_HZ = 250.0

EQ_ARCHETYPES = (
    EQArchetype("bright", None, ((2000.0, 5000.0), (6.0, 12.0)), ("bright", "brighter", "crisp")),
    EQArchetype("dark", None, ((1000.0, 4000.0), (-18.0, -8.0)), ("dark", "darker", "muffled")),
    EQArchetype("warm", ((150.0, 400.0), (4.0, 9.0)), ((3000.0, 6000.0), (-9.0, -4.0)), ("warm", "warmer")),
    EQArchetype("bass", ((80.0, 250.0), (6.0, 12.0)), None, ("bass-heavy", "boomy", "more bass")),
    EQArchetype("thin", ((200.0, 600.0), (-18.0, -8.0)), None, ("thin", "thinner")),
)


# -- synth preset names -> a category and an instrument (amsynth and DX7 name no category) ----------------------------
# Checked in order; a word matches at a word start, case-insensitive ("EP" and "E.PIANO" -> Electric Piano). The
# categories are the GM family names, so one text space serves soundfonts and synths.
NAME_RULES = (
    (r"e\.? ?piano|\bep\b|rhodes|wurl|dyno|suitcase|tine", "Piano", "Electric Piano"),
    (r"clav", "Piano", "Clavinet"),
    (r"harpsi", "Piano", "Harpsichord"),
    (r"piano|\bgrand\b|honky", "Piano", "Acoustic Grand Piano"),
    (r"marimba|xylo|vibe|vibra|glock|celest|music ?box|kalimba|tub\.? ?bell|bells?\b|chime|mallet", "Chromatic Percussion", "Bells"),
    (r"organ|hammond|church|pipe ?org|accord|harmonium|drawbar|b3\b", "Organ", "Organ"),
    (r"guit|gtr|strat|pluck|harp|koto|sitar|banjo|mandol|lute|shamisen", "Guitar", "Plucked String"),
    (r"bass", "Bass", "Synth Bass"),
    (r"string|violin|viola|cello|fiddle|orchestr|pizz", "Strings", "Strings"),
    (r"choir|voice|vox|vocal|\baah|\booh|human", "Ensemble", "Choir"),
    (r"trumpet|trombone|horn|brass|tuba|bugle|cornet", "Brass", "Brass"),
    (r"sax|clarinet|oboe|bassoon|reed", "Reed", "Reed"),
    (r"flute|pipe|whistle|ocarina|recorder|pan ?flute|shakuhachi|blow|breath", "Pipe", "Flute"),
    (r"lead|solo|mono|saw|square|sync", "Synth Lead", "Synth Lead"),
    (r"pad|sweep|atmos|ambien|warm|haze|evolv|texture|drone|space|cloud", "Synth Pad", "Synth Pad"),
    (r"fx|effect|noise|zap|laser|siren|wind|rain|alien|robot|sci|drop|riser|wobble", "Synth Effects", "Synth Effects"),
    (r"drum|kick|snare|tom\b|perc|hat|cymbal|clap|timpani|conga|steel ?drum", "Percussive", "Percussion"),
)
_NAME_RULES = tuple((re.compile(r"(?:^|(?<=[^a-z]))(?:" + pattern + ")", re.I), cat, inst)
                    for pattern, cat, inst in NAME_RULES)


def name_family(title: str) -> tuple[str, str]:
    """``(category, instrument)`` a preset name implies, or ``("", "")`` when its words say nothing."""
    for pattern, category, instrument in _NAME_RULES:
        if pattern.search(title):
            return category, instrument
    return "", ""


# -- plain-language descriptions -----------------------------------------------------------------------------------
# What people call a category, beside its GM family name ("keys" for Piano, "pad" for Synth Pad).
CATEGORY_WORDS = {
    "Piano": ("piano", "keys", "keyboard"), "Chromatic Percussion": ("bell", "mallet", "tuned percussion"),
    "Organ": ("organ",), "Guitar": ("guitar", "plucked string"), "Bass": ("bass",),
    "Strings": ("strings", "string section"), "Ensemble": ("ensemble", "choir"),
    "Brass": ("brass", "horn section"), "Reed": ("reed", "woodwind"), "Pipe": ("flute", "woodwind"),
    "Synth Lead": ("synth lead", "lead"), "Synth Pad": ("pad", "synth pad"),
    "Synth Effects": ("sound effect", "synth effect"), "Ethnic": ("world instrument",),
    "Percussive": ("percussion",), "Sound Effects": ("sound effect",), "Synth": ("synth", "synthesizer"),
}
_ENVELOPE_ADJECTIVES = {"percussive": "plucked", "soft attack": "slow", "sustained": "sustained",
                        "decaying": "decaying"}
_TAIL_PHRASES = {"short release": "with a short release", "long release": "with a long release",
                 "noisy": "with noise in it"}


def descriptions(category: str, instrument: str, words: list[str], rng=None, count: int = 2) -> list[str]:
    """Plain-language sentences for one sound from its labels and measured words, e.g. "a bright plucked bass with
    a short release"; ``count`` of them (deterministic without ``rng``: the first word choices)."""
    nouns = list(CATEGORY_WORDS.get(category, ()))
    if instrument and instrument.lower() not in nouns and "(" not in instrument:
        nouns.append(instrument.lower())
    if not nouns:
        nouns = ["synth sound"]
    tone = [w for w in words if w in ("bright", "dark")]
    envelope = [_ENVELOPE_ADJECTIVES[w] for w in words if w in _ENVELOPE_ADJECTIVES]
    tails = [_TAIL_PHRASES[w] for w in words if w in _TAIL_PHRASES]
    out = []
    for k in range(count):
        pick = (lambda xs: xs[int(rng.integers(len(xs)))]) if rng is not None else (lambda xs: xs[k % len(xs)])
        adjectives = tone[:1] + envelope[:1]
        phrase = " ".join(adjectives + [pick(nouns)])
        if tails and (rng is None or rng.random() < 0.6):
            phrase += " " + pick(tails)
        article = "an" if phrase[0] in "aeiou" else "a"
        out.append(f"{article} {phrase}")
    return list(dict.fromkeys(out))
