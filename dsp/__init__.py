"""timbreclip.dsp: the EQ math (RBJ biquads), a differentiable ParametricEQ in torch, the numba playback engine,
the EQ settings format, audio file I/O and audio descriptors. Knows nothing of neural networks or devices."""

from .biquad import BAND_TYPES, cascade_response, design_sos, magnitude_db, rbj_coefficients
from .engine import BiquadCascade
from .errors import AudioFileError, SettingsError, TimbreclipError
from .settings import Band, EQSettings

__all__ = [
    "BAND_TYPES", "AudioFileError", "Band", "BiquadCascade", "EQSettings", "SettingsError", "TimbreclipError",
    "cascade_response", "design_sos", "magnitude_db", "rbj_coefficients",
]
