"""RBJ-cookbook biquad math: the one source of the EQ's coefficients and frequency response.

Every function here takes an array namespace ``xp`` (``numpy`` or ``torch``) so that the torch path (batched,
differentiable, used by the optimiser) and the numpy path (used to design the filters the audio thread plays) run
the very same formulas. Nothing here allocates in an audio thread: the numba engine only ever receives the
coefficients these functions computed.

Reference: R. Bristow-Johnson, "Cookbook formulae for audio EQ biquad filter coefficients" (Audio EQ Cookbook).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# Band types of the interchange format, with a stable integer code for batched (tensor) evaluation.
BAND_TYPES: tuple[str, ...] = ("peak", "low_shelf", "high_shelf", "low_pass", "high_pass", "band_pass", "notch")
BAND_CODE: dict[str, int] = {name: code for code, name in enumerate(BAND_TYPES)}
# Types whose gain_db changes the response (the others ignore it).
GAIN_TYPES: frozenset[str] = frozenset({"peak", "low_shelf", "high_shelf"})


def rbj_coefficients(
    band_code: Any, freq_hz: Any, gain_db: Any, q: Any, sample_rate: float, xp: Any = np
) -> Any:
    """Biquad coefficients ``(b0, b1, b2, a0, a1, a2)`` for bands of any type, batched.

    Args:
        band_code: integer codes from ``BAND_CODE``, shape ``(...)`` (broadcast against the other arguments).
        freq_hz: centre / corner frequency in Hz, ``(...)``; must lie in ``(0, sample_rate / 2)``.
        gain_db: gain in dB for peak and shelf bands, ``(...)``; ignored by the other types.
        q: quality factor (> 0), ``(...)``. For shelves it is the cookbook's Q (slope 1 <=> Q = 1/sqrt(2)).
        sample_rate: rate in Hz the filter is designed for.
        xp: ``numpy`` or ``torch``; with torch the result is differentiable in freq_hz, gain_db and q.

    Returns:
        Array ``(..., 6)`` of un-normalised coefficients ``b0, b1, b2, a0, a1, a2``.

    Example:
        >>> c = rbj_coefficients(BAND_CODE["peak"], 1000.0, 6.0, 0.7, 48000.0)
        >>> c.shape
        (6,)
    """
    band_code, freq_hz, gain_db, q = (_as_array(v, xp) for v in (band_code, freq_hz, gain_db, q))
    w0 = (2.0 * math.pi / sample_rate) * freq_hz
    cos_w, sin_w = xp.cos(w0), xp.sin(w0)
    alpha = sin_w / (2.0 * q)
    amp = 10.0 ** (gain_db / 40.0)
    one = xp.ones_like(cos_w * amp)
    zero = xp.zeros_like(one)

    def peak():
        return (1.0 + alpha * amp, -2.0 * cos_w, 1.0 - alpha * amp, 1.0 + alpha / amp, -2.0 * cos_w,
                1.0 - alpha / amp)

    def shelf(sign: float):  # sign +1: low shelf, -1: high shelf (the cookbook's two forms, one written)
        ap1, am1, s = amp + 1.0, amp - 1.0, 2.0 * xp.sqrt(amp) * alpha
        return (amp * (ap1 - sign * am1 * cos_w + s), sign * 2.0 * amp * (am1 - sign * ap1 * cos_w),
                amp * (ap1 - sign * am1 * cos_w - s), ap1 + sign * am1 * cos_w + s,
                -sign * 2.0 * (am1 + sign * ap1 * cos_w), ap1 + sign * am1 * cos_w - s)

    def den():
        return (1.0 + alpha, -2.0 * cos_w, 1.0 - alpha)

    table = (
        peak,
        lambda: shelf(1.0),
        lambda: shelf(-1.0),
        lambda: ((1.0 - cos_w) / 2.0, 1.0 - cos_w, (1.0 - cos_w) / 2.0) + den(),  # low pass
        lambda: ((1.0 + cos_w) / 2.0, -(1.0 + cos_w), (1.0 + cos_w) / 2.0) + den(),  # high pass
        lambda: (alpha, zero, -alpha) + den(),  # band pass, constant 0 dB peak gain
        lambda: (one, -2.0 * cos_w, one) + den(),  # notch
    )
    # only the types present are designed (the steering EQ has three of the seven: its optimiser runs this often)
    codes = band_code.reshape(-1).tolist() if hasattr(band_code, "reshape") else [int(band_code)]
    present = sorted({int(c) for c in codes})
    designed = {code: table[code]() for code in present}
    columns = []
    for k in range(6):
        col = designed[present[0]][k] * one
        for code in present[1:]:
            col = xp.where(band_code == code, designed[code][k] * one, col)
        columns.append(col)
    return xp.stack(columns, -1)


def _as_array(value: Any, xp: Any) -> Any:
    return value if hasattr(value, "shape") else xp.asarray(value)


def normalise(coeffs: Any) -> Any:
    """Divide ``(..., 6)`` coefficients by a0, giving ``(..., 6)`` with a0 == 1 (scipy's ``sos`` layout)."""
    return coeffs / coeffs[..., 3:4]


def cascade_response(sos: Any, freqs_hz: Any, sample_rate: float, xp: Any = np) -> Any:
    """Complex frequency response of a biquad cascade on any frequency grid.

    Args:
        sos: coefficients ``(..., sections, 6)`` as ``b0, b1, b2, a0, a1, a2`` (normalised or not).
        freqs_hz: frequencies in Hz, ``(freqs,)``.
        sample_rate: rate in Hz the coefficients were designed for.
        xp: ``numpy`` or ``torch``.

    Returns:
        Complex array ``(..., freqs)``: the product over sections of ``B(e^jw) / A(e^jw)``.
    """
    w = (2.0 * math.pi / sample_rate) * _as_array(freqs_hz, xp)
    z1 = xp.exp(-1j * w)  # (freqs,)
    z2 = z1 * z1
    sos = sos[..., None, :]  # (..., sections, 1, 6) to broadcast over freqs
    num = sos[..., 0] + sos[..., 1] * z1 + sos[..., 2] * z2
    den = sos[..., 3] + sos[..., 4] * z1 + sos[..., 5] * z2
    return xp.prod(num / den, -2)


def cascade_power(sos: Any, freqs_hz: Any, sample_rate: float, xp: Any = np) -> Any:
    """``|H|^2`` of a biquad cascade ``(..., sections, 6)`` at ``freqs_hz`` ``(freqs,)``: ``(..., freqs)``.

    The same as ``|cascade_response|^2`` in real arithmetic: for ``B(z) = b0 + b1 z^-1 + b2 z^-2`` on the unit
    circle, ``|B|^2 = b0^2 + b1^2 + b2^2 + 2 (b0 b1 + b1 b2) cos w + 2 b0 b2 cos 2w`` (and so for ``A``). No complex
    numbers, a third of the operations: the steering optimiser evaluates it at every step."""
    w = (2.0 * math.pi / sample_rate) * _as_array(freqs_hz, xp)
    c1, c2 = xp.cos(w), xp.cos(2.0 * w)

    def power(c0, k1, k2):  # (..., sections, 1) each
        return (c0 * c0 + k1 * k1 + k2 * k2) + 2.0 * (c0 * k1 + k1 * k2) * c1 + 2.0 * (c0 * k2) * c2

    sos = sos[..., None, :]
    num = power(sos[..., 0], sos[..., 1], sos[..., 2])
    den = power(sos[..., 3], sos[..., 4], sos[..., 5])
    return xp.prod(num / den, -2)


def magnitude_db(response: Any, xp: Any = np, floor: float = 1e-12) -> Any:
    """``20 log10 |H|`` in dB, with a floor so that zeros of a notch stay finite."""
    return 20.0 * xp.log10(xp.abs(response) + floor)


def design_sos(
    band_types: list[str], freq_hz: list[float], gain_db: list[float], q: list[float], sample_rate: float
) -> np.ndarray:
    """Normalised float64 second-order sections ``(sections, 6)`` for physical bands at ``sample_rate``."""
    codes = np.array([BAND_CODE[t] for t in band_types], dtype=np.int64)
    coeffs = rbj_coefficients(
        codes,
        np.asarray(freq_hz, dtype=np.float64),
        np.asarray(gain_db, dtype=np.float64),
        np.asarray(q, dtype=np.float64),
        float(sample_rate),
        xp=np,
    )
    return normalise(coeffs.reshape(len(band_types), 6))
