"""The EQ settings interchange format: one dataclass, one JSON layout, used by every feature.

JSON layout (documented in the README)::

    {"sample_rate": 48000,
     "bands": [{"type": "peak", "freq_hz": 1000.0, "gain_db": 3.0, "q": 0.7}, ...],
     "output_gain_db": 0.0,            # optional, applied after the bands
     "provenance": {...}}              # optional, free JSON: prompts, weights, model hash, seed, tool version

Bands are physical (Hz, dB, Q). ``sample_rate`` is the rate they were designed at; applying them at another rate
re-designs the same physical bands for that rate (a band at or above the new Nyquist is an error, or is clamped to
0.45 x rate on request).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .biquad import BAND_TYPES, GAIN_TYPES, design_sos
from .errors import SettingsError

CLAMP_FRACTION = 0.45  # where --clamp-bands moves a band that does not fit below Nyquist
MAX_GAIN_DB = 48.0  # a band's gain and the output gain: beyond this it is a typo, not an EQ
MAX_BANDS = 256
AMOUNT_RANGE = (0.0, 1.5)
LANDMARKS_HZ = (30.0, 60.0, 125.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0, 7200.0, 12000.0)  # how much of a fitted curve plays: 0 flat, 1 the fit, 1.5 beyond it
CHUNK_FRAMES = 1 << 16  # bounded per-call block when playing a whole array


@dataclass(frozen=True)
class Band:
    """One EQ band: ``type`` in BAND_TYPES, ``freq_hz`` (Hz), ``gain_db`` (dB, peak and shelves only), ``q`` (> 0)."""

    type: str
    freq_hz: float
    gain_db: float = 0.0
    q: float = 0.7071

    def __post_init__(self) -> None:
        if self.type not in BAND_TYPES:
            raise SettingsError(f"unknown band type {self.type!r} (expected one of {', '.join(BAND_TYPES)})")
        for name in ("freq_hz", "gain_db", "q"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise SettingsError(f"band {self.type} has a non-numeric or non-finite {name}: {value!r}")
        if self.freq_hz <= 0:
            raise SettingsError(f"band {self.type} has freq_hz {self.freq_hz} <= 0")
        if self.q <= 0:
            raise SettingsError(f"band {self.type} at {self.freq_hz:g} Hz has q {self.q} <= 0")
        if abs(self.gain_db) > MAX_GAIN_DB:
            raise SettingsError(f"band {self.type} at {self.freq_hz:g} Hz has gain_db {self.gain_db:g}: beyond "
                                f"+-{MAX_GAIN_DB:g} dB")

    def describe(self) -> str:
        gain = f" {self.gain_db:+.1f} dB" if self.type in GAIN_TYPES else ""
        return f"{self.type:<10} {self.freq_hz:8.1f} Hz{gain} Q {self.q:.2f}"


def check_amount(amount: float) -> float:
    """``amount`` if it is in ``AMOUNT_RANGE``; one clear error otherwise."""
    if not (math.isfinite(amount) and AMOUNT_RANGE[0] <= amount <= AMOUNT_RANGE[1]):
        raise SettingsError(f"amount {amount:g}: must be {AMOUNT_RANGE[0]:g}..{AMOUNT_RANGE[1]:g}")
    return float(amount)


@dataclass
class EQSettings:
    """A parametric EQ: physical bands designed at ``sample_rate``, then ``output_gain_db``.

    Pedalboard-like: ``settings(audio, sample_rate)`` returns the equalised audio ``(channels, frames)`` or
    ``(frames,)``, and the bands are readable attributes (``settings.bands[0].gain_db``).

    Example:
        >>> eq = EQSettings(48000, [Band("peak", 1000.0, 3.0, 0.7)])
        >>> y = eq(np.zeros((2, 480), np.float32), 48000)
    """

    sample_rate: float
    bands: list[Band]
    output_gain_db: float = 0.0
    provenance: dict[str, Any] | None = field(default=None)

    def __post_init__(self) -> None:
        if not isinstance(self.sample_rate, (int, float)) or not self.sample_rate > 0:
            raise SettingsError(f"sample_rate must be a positive number, got {self.sample_rate!r}")
        if not math.isfinite(self.output_gain_db):
            raise SettingsError(f"output_gain_db is not finite: {self.output_gain_db!r}")
        if abs(self.output_gain_db) > MAX_GAIN_DB:
            raise SettingsError(f"output_gain_db {self.output_gain_db:g} is beyond +-{MAX_GAIN_DB:g} dB")
        if len(self.bands) > MAX_BANDS:
            raise SettingsError(f"{len(self.bands)} bands: at most {MAX_BANDS}")
        self.check_nyquist(self.sample_rate)

    # -- validation and re-design -------------------------------------------------------------------------------
    def check_nyquist(self, sample_rate: float) -> None:
        nyquist = sample_rate / 2.0
        for i, band in enumerate(self.bands):
            if band.freq_hz >= nyquist:
                raise SettingsError(
                    f"band {i} ({band.type} at {band.freq_hz:g} Hz) is at or above Nyquist ({nyquist:g} Hz) "
                    f"for {sample_rate:g} Hz audio"
                )

    def scaled(self, amount: float) -> "EQSettings":
        """The same EQ with every peak and shelf gain (dB) and the output gain times ``amount`` (``AMOUNT_RANGE``):
        0 is flat, 1 the fit, 1.5 beyond it. The provenance says how much of the fit it holds (amounts multiply)."""
        check_amount(amount)
        provenance = dict(self.provenance or {})
        provenance["amount"] = round(float(provenance.get("amount", 1.0)) * amount, 6)
        bands = [replace(b, gain_db=b.gain_db * amount) for b in self.bands]
        return EQSettings(self.sample_rate, bands, self.output_gain_db * amount, provenance)

    def for_rate(self, sample_rate: float, clamp: bool = False) -> "EQSettings":
        """The same physical bands for audio at ``sample_rate``; bands at or above Nyquist raise, or move to
        ``0.45 x sample_rate`` with a warning when ``clamp``."""
        limit = CLAMP_FRACTION * sample_rate
        bands = []
        for i, band in enumerate(self.bands):
            if band.freq_hz >= sample_rate / 2.0 and clamp:
                warnings.warn(
                    f"band {i} ({band.type} at {band.freq_hz:g} Hz) moved to {limit:g} Hz "
                    f"(0.45 x {sample_rate:g} Hz)",
                    stacklevel=2,
                )
                band = replace(band, freq_hz=limit)
            bands.append(band)
        return EQSettings(float(sample_rate), bands, self.output_gain_db, self.provenance)

    def sos(self, sample_rate: float | None = None) -> np.ndarray:
        """Normalised float64 sections ``(bands, 6)`` designed at ``sample_rate`` (default: the settings' own)."""
        rate = float(self.sample_rate if sample_rate is None else sample_rate)
        self.check_nyquist(rate)
        if not self.bands:
            return np.array([[1.0, 0.0, 0.0, 1.0, 0.0, 0.0]])
        b = self.bands
        return design_sos([x.type for x in b], [x.freq_hz for x in b], [x.gain_db for x in b], [x.q for x in b], rate)

    # -- applying -----------------------------------------------------------------------------------------------
    def __call__(self, audio: np.ndarray, sample_rate: float) -> np.ndarray:
        """Equalise ``audio`` (``(channels, frames)`` or ``(frames,)``) at ``sample_rate`` with the numba engine,
        in chunks of ``CHUNK_FRAMES`` (state carried), into one output array."""
        from .engine import BiquadCascade

        x = np.asarray(audio, dtype=np.float32)
        block = x[None, :] if x.ndim == 1 else x
        cascade = BiquadCascade(self.sos(sample_rate), channels=block.shape[0], output_gain_db=self.output_gain_db)
        y = np.empty(block.shape, dtype=np.float32)
        for start in range(0, block.shape[1], CHUNK_FRAMES):
            cascade.process(np.ascontiguousarray(block[:, start:start + CHUNK_FRAMES]),
                            out=y[:, start:start + CHUNK_FRAMES])
        return y[0] if x.ndim == 1 else y

    def summed_curve(self, freqs_hz=LANDMARKS_HZ, sample_rate: float | None = None) -> list[tuple[float, float]]:
        """The net gain of all bands together (output gain left out) at ``freqs_hz`` (below 0.5 x rate):
        ``[(Hz, dB)]``, what the EQ does to the sound's balance."""
        rate = float(self.sample_rate if sample_rate is None else sample_rate)
        f = np.array([x for x in freqs_hz if x < 0.5 * rate], np.float64)
        return list(zip(f.tolist(), (self.response_db(f, rate) - self.output_gain_db).tolist()))

    def span_db(self, low_hz: float = 30.0, high_hz: float = 7200.0, sample_rate: float | None = None) -> float:
        """Highest minus lowest point of the summed curve between ``low_hz`` and ``high_hz``."""
        rate = float(self.sample_rate if sample_rate is None else sample_rate)
        curve = self.response_db(np.geomspace(low_hz, min(high_hz, 0.499 * rate), 256), rate)
        return float(curve.max() - curve.min())

    def response_db(self, freqs_hz: np.ndarray, sample_rate: float | None = None) -> np.ndarray:
        """Magnitude response in dB (output gain included) at ``freqs_hz``."""
        from .biquad import cascade_response, magnitude_db

        rate = float(self.sample_rate if sample_rate is None else sample_rate)
        return magnitude_db(cascade_response(self.sos(rate), freqs_hz, rate)) + self.output_gain_db

    # -- pedalboard ---------------------------------------------------------------------------------------------
    def to_pedalboard(self):
        """A ``pedalboard.Pedalboard`` of PeakFilter / LowShelfFilter / HighShelfFilter (+ Gain).

        Pedalboard's low/high-pass filters are first order and its band-pass and notch have no gain-free equal,
        so settings with those bands refuse conversion rather than sound different.
        """
        import pedalboard

        makers = {
            "peak": pedalboard.PeakFilter,
            "low_shelf": pedalboard.LowShelfFilter,
            "high_shelf": pedalboard.HighShelfFilter,
        }
        plugins = []
        for i, band in enumerate(self.bands):
            if band.type not in makers:
                raise SettingsError(
                    f"band {i} ({band.type}) has no pedalboard equivalent: pedalboard's filters of that kind are "
                    "first order or differ from the RBJ design, so the EQ would not sound the same"
                )
            plugins.append(makers[band.type](cutoff_frequency_hz=band.freq_hz, gain_db=band.gain_db, q=band.q))
        if self.output_gain_db:
            plugins.append(pedalboard.Gain(gain_db=self.output_gain_db))
        return pedalboard.Pedalboard(plugins)

    # -- JSON ---------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "sample_rate": self.sample_rate,
            "bands": [{"type": b.type, "freq_hz": b.freq_hz, "gain_db": b.gain_db, "q": b.q} for b in self.bands],
            "output_gain_db": self.output_gain_db,
        }
        if self.provenance is not None:
            out["provenance"] = self.provenance
        return out

    @classmethod
    def from_dict(cls, data: Any, source: str = "settings") -> "EQSettings":
        """Build from the JSON layout; every problem raises a SettingsError naming ``source``."""
        try:
            if not isinstance(data, dict):
                raise SettingsError("the top level must be a JSON object")
            if "sample_rate" not in data or "bands" not in data:
                raise SettingsError("needs 'sample_rate' and 'bands'")
            if not isinstance(data["bands"], list):
                raise SettingsError("'bands' must be a list")
            bands = []
            for i, raw in enumerate(data["bands"]):
                if not isinstance(raw, dict) or "type" not in raw or "freq_hz" not in raw:
                    raise SettingsError(f"band {i} needs at least 'type' and 'freq_hz'")
                try:
                    bands.append(Band(raw["type"], raw["freq_hz"], raw.get("gain_db", 0.0), raw.get("q", 0.7071)))
                except SettingsError as err:
                    raise SettingsError(f"band {i}: {err}") from None
            gain = data.get("output_gain_db", 0.0)
            if isinstance(gain, bool) or not isinstance(gain, (int, float)):
                raise SettingsError(f"output_gain_db must be a number, got {gain!r}")
            rate = data["sample_rate"]
            if isinstance(rate, bool) or not isinstance(rate, (int, float)):
                raise SettingsError(f"sample_rate must be a number, got {rate!r}")
            return cls(float(rate), bands, float(gain), data.get("provenance"))
        except SettingsError as err:
            raise SettingsError(f"{source}: {err}") from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> "EQSettings":
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as err:
            raise SettingsError(f"{path}: cannot read settings ({err.strerror or err})") from None
        except UnicodeDecodeError as err:
            raise SettingsError(f"{path}: not UTF-8 text (byte {err.start}): not an EQ settings file") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise SettingsError(f"{path}: malformed JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
        except RecursionError:
            raise SettingsError(f"{path}: JSON nested too deeply to be EQ settings") from None
        return cls.from_dict(data, source=str(path))

    def save(self, path: str | os.PathLike) -> None:
        """Write the JSON atomically (temporary file, then rename)."""
        tmp = f"{path}.tmp-{os.getpid()}"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(self.to_dict(), f, indent=2)
                f.write("\n")
            os.replace(tmp, path)
        finally:  # a full disk or an interrupt: no half-written temporary left beside the target
            if os.path.exists(tmp):
                os.unlink(tmp)

    def __str__(self) -> str:
        lines = [f"EQ @ {self.sample_rate:g} Hz, output {self.output_gain_db:+.1f} dB"]
        lines += ["  " + b.describe() for b in self.bands]
        return "\n".join(lines)
