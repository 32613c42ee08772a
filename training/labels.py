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


def sound_texts(title: str, instrument: str, category: str, source: str, words: list[str]) -> list[str]:
    """Every text that describes one sound (deduplicated, order kept)."""
    t = strip_index(title)
    texts = [title, t, f"{t} {category}", category]
    if instrument:
        texts.append(instrument)
    if source:
        texts.append(source)
    for w in words:
        texts += [w, f"{w} {category}", f"{w} {t}"]
    return list(dict.fromkeys(x for x in texts if x))


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
