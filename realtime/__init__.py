"""The edge that touches devices: the live loop's stream, ring buffer, steering worker and MIDI control.

Nothing below this package imports it. The audio callback code here allocates no audio buffers, takes no locks and
calls no model (see ``loop.py``)."""
