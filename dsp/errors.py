"""Errors the dsp layer raises for bad input: one line, naming the file (or field) and the problem."""


class TimbreclipError(ValueError):
    """Bad input a user can fix; the CLI prints its message as one line and exits non-zero."""


class SettingsError(TimbreclipError):
    """Malformed or impossible EQ settings."""


class AudioFileError(TimbreclipError):
    """Missing, unreadable, corrupt, empty or non-finite audio."""
