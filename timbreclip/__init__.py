"""timbreclip: connect timbre and text. The shell package: CLI, defaults and the shipped model.

The domain packages install beneath it: ``timbreclip.dsp``, ``timbreclip.neural``, ``timbreclip.training``,
``timbreclip.export``.
"""

__version__ = "0.1.0"
