"""Terminal control of the live loop: lines typed while it runs, and the status display.

A line of words replaces the prompts (``warm, airy:0.5`` = "warm" at weight 1 and "airy" at 0.5). Commands start
with a colon, and ``+`` / ``-`` nudge the amount::

    :b          bypass on/off (ramped)        :h          hold on/off (freeze the EQ)
    +  /  -     amount up / down by 0.1       :a 0.7      set the amount
    :s FILE     save the EQ playing now       :q          quit
    :w 0.3      set the source weight         :?          this help

An empty line is ignored with a message; the loop keeps playing.
"""

from __future__ import annotations

import math
import sys
import threading

HELP = ("words replace the prompts (warm, airy:0.5); :b bypass, :h hold, + / - amount, :a N amount, :w N source "
        "weight, :s FILE save, :q quit")


def parse_prompts(line: str) -> dict[str, float]:
    """``"warm, airy:0.5"`` -> ``{"warm": 1.0, "airy": 0.5}``; raises ValueError with a reason."""
    prompts: dict[str, float] = {}
    for part in line.split(","):
        text, _, weight = part.strip().rpartition(":") if ":" in part else (part.strip(), "", "1")
        text = text.strip()
        if not text:
            raise ValueError(f"empty prompt in {line!r}")
        w = float(weight)
        if not math.isfinite(w) or w < 0:
            raise ValueError(f"weight {weight!r} of {text!r} must be a finite number >= 0")
        prompts[text] = prompts.get(text, 0.0) + w
    if not any(w > 0 for w in prompts.values()):
        raise ValueError("every weight is 0")
    return prompts


def parse_line(line: str) -> tuple:
    """One typed line -> a live-loop command (see module docstring); ("error", why) for a bad line."""
    text = line.strip()
    if not text:
        return ("empty",)
    if text in ("+", "-"):
        return ("amount_step", 0.1 if text == "+" else -0.1)
    if text.startswith(":"):
        verb, _, rest = text[1:].partition(" ")
        rest = rest.strip()
        try:
            if verb in ("q", "quit"):
                return ("quit",)
            if verb in ("b", "bypass"):
                return ("bypass", None)
            if verb in ("h", "hold"):
                return ("hold", None)
            if verb in ("a", "amount"):
                return ("amount", _finite(rest))
            if verb in ("w", "source"):
                return ("source_weight", max(0.0, _finite(rest)))
            if verb in ("s", "save"):
                return ("save", rest) if rest else ("error", ":s needs a file name")
            if verb in ("?", "help"):
                return ("help",)
        except ValueError as err:
            return ("error", f"{text}: {err}")
        return ("error", f"unknown command {text!r} ({HELP})")
    try:
        return ("prompts", parse_prompts(text))
    except ValueError as err:
        return ("error", str(err))


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    return value


def start_line_reader(commands, stream=None) -> threading.Thread:
    """Read lines from ``stream`` (stdin) in a daemon thread and post parsed commands; EOF just ends the thread."""
    stream = sys.stdin if stream is None else stream

    def read() -> None:
        for line in stream:
            commands.put(parse_line(line))

    thread = threading.Thread(target=read, name="timbreclip-console", daemon=True)
    thread.start()
    return thread
