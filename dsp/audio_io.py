"""Audio file I/O through pedalboard's ``AudioFile``: reading, chunked processing, atomic writing.

Every failure is a one-line ``AudioFileError`` naming the file and the problem; an output file is only ever
created by renaming a finished temporary file, so a failed run never leaves a half-written output behind.
Audio is ``(channels, frames)`` float32 throughout, as pedalboard has it.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from .errors import AudioFileError

CHUNK_FRAMES = 1 << 16  # ~1.4 s at 48 kHz: bounded memory for files of any length


def _open(path: str | os.PathLike):
    from pedalboard.io import AudioFile

    p = Path(path)
    if not p.exists():
        raise AudioFileError(f"{path}: no such file")
    if p.is_dir():
        raise AudioFileError(f"{path}: is a directory, not an audio file")
    try:
        f = AudioFile(str(p))
    except Exception as err:  # pedalboard raises ValueError/RuntimeError for unsupported or corrupt data
        raise AudioFileError(f"{path}: cannot read audio ({_first_line(err)})") from None
    missing = _missing_bytes(p)
    if missing:
        f.close()
        raise AudioFileError(f"{path}: truncated: its header declares {missing[0]} bytes of audio but only "
                             f"{missing[1]} are there (the reader would fill the rest with silence)")
    return f


def _missing_bytes(path: Path) -> tuple[int, int] | None:
    """For WAV and AIFF: (declared, present) audio bytes when the file holds less than its header declares."""
    import struct

    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12:
                return None
            if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
                little, data_id, skip = True, b"data", 0
            elif head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
                little, data_id, skip = False, b"SSND", 8  # SSND starts with offset and block size
            else:
                return None
            position = 12
            while position + 8 <= size:
                f.seek(position)
                chunk = f.read(8)
                if len(chunk) < 8:
                    return None
                length = struct.unpack("<I" if little else ">I", chunk[4:])[0]
                if chunk[:4] == data_id:
                    declared = length - skip
                    present = max(0, size - position - 8 - skip)
                    if declared == 0xFFFFFFFF or declared <= present:  # 0xFFFFFFFF: size unknown (streamed)
                        return None
                    return declared, present
                position += 8 + length + (length & 1)
    except OSError:
        return None
    return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def audio_info(path: str | os.PathLike) -> tuple[float, int, int]:
    """``(sample_rate, channels, frames)`` of an audio file."""
    with _open(path) as f:
        return float(f.samplerate), int(f.num_channels), int(f.frames)


def iter_chunks(path: str | os.PathLike, chunk_frames: int = CHUNK_FRAMES) -> Iterator[np.ndarray]:
    """Yield ``(channels, frames)`` float32 chunks, checking every chunk for NaN / Inf."""
    with _open(path) as f:
        if f.frames == 0:
            raise AudioFileError(f"{path}: contains no audio (zero length)")
        position = 0
        while position < f.frames:
            try:
                chunk = f.read(min(chunk_frames, f.frames - position))
            except Exception as err:
                raise AudioFileError(f"{path}: corrupt audio at frame {position} ({_first_line(err)})") from None
            if chunk.shape[-1] == 0:
                break
            if not np.isfinite(chunk).all():
                bad = int(np.argmax(~np.isfinite(chunk).all(axis=0)))
                raise AudioFileError(f"{path}: NaN or Inf sample at frame {position + bad}")
            position += chunk.shape[-1]
            yield np.ascontiguousarray(chunk, dtype=np.float32)


def read_audio(path: str | os.PathLike, max_seconds: float | None = None) -> tuple[np.ndarray, float]:
    """Read a whole file (or its first ``max_seconds``) as ``(channels, frames)`` float32 and its rate."""
    rate, _, frames = audio_info(path)
    limit = frames if max_seconds is None else min(frames, int(math.ceil(max_seconds * rate)))
    chunks, total = [], 0
    for chunk in iter_chunks(path):
        chunks.append(chunk)
        total += chunk.shape[-1]
        if total >= limit:
            break
    audio = np.concatenate(chunks, axis=-1)[:, :limit]
    return audio, rate


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[str]:
    """A temporary path beside ``path`` (same extension, so the format is kept); renamed onto ``path`` only if
    the block finishes, removed otherwise (SIGTERM and SIGHUP included: they end the block like Ctrl-C).

    A symbolic link as ``path`` is written through (its target is replaced, the link stays); the new file gets the
    mode an existing target had, else the mode a plain ``open`` would give (0666 less the umask)."""
    target = Path(path)
    if target.is_symlink():
        target = Path(os.path.realpath(target))
    if target.is_dir():
        raise AudioFileError(f"{path}: output path is a directory")
    if not target.parent.exists():
        raise AudioFileError(f"{path}: output folder {target.parent} does not exist")
    if target.exists():
        mode = target.stat().st_mode & 0o7777
    else:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=target.suffix or ".wav", dir=target.parent)
    os.close(fd)
    try:
        with _signals_end_the_block():
            yield tmp
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: unwinds like Ctrl-C, so partial outputs are removed."""


@contextlib.contextmanager
def _signals_end_the_block():
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Terminated(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file (through links); False when either does not exist."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


_DTYPE_BITS = {"int8": 8, "int16": 16, "int24": 24, "int32": 32, "float32": 32, "float64": 32}


def source_dtype(path: str | os.PathLike) -> str:
    """The sample format stored in an audio file ("int16", "int24", "float32", ...)."""
    with _open(path) as f:
        return str(f.file_dtype)


def _writer_options(path: str | os.PathLike, source_dtype: str | None = "float32") -> dict:
    """Bit depth for the output: the input's (float32 for audio we made), within what the format can hold."""
    ext = Path(path).suffix.lower()
    if ext == ".wav":
        return {"bit_depth": _DTYPE_BITS.get(source_dtype or "", 16)}
    if ext in (".aif", ".aiff", ".flac"):  # integer formats, 24 bits at most here (float input -> 24-bit)
        return {"bit_depth": min(24, _DTYPE_BITS.get(source_dtype or "", 16))}
    return {}


def write_audio(path: str | os.PathLike, audio: np.ndarray, sample_rate: float, bit_depth: int | None = None,
                source_dtype: str | None = "float32") -> None:
    """Write ``(channels, frames)`` (or ``(frames,)``) float audio atomically; the format follows the extension,
    the bit depth ``source_dtype``'s (the input's, for a processed file: 16-bit in, 16-bit out; float stays 32-bit
    float in WAV and becomes 24-bit in AIFF and FLAC, which hold no float here), or ``bit_depth``. Integer output is
    quantised by rounding, without dither; callers keep the peak below 0 dBFS, so nothing clips."""
    from pedalboard.io import AudioFile

    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None, :]
    with atomic_output(path) as tmp:
        try:
            options = _writer_options(path, source_dtype)
            if bit_depth is not None and options:
                options["bit_depth"] = bit_depth
            with AudioFile(tmp, "w", samplerate=sample_rate, num_channels=audio.shape[0], **options) as f:
                f.write(audio)
        except Exception as err:
            raise AudioFileError(f"{path}: cannot write audio ({_first_line(err)}; is the disk full?); nothing "
                                 "was written") from None


def process_file(
    in_path: str | os.PathLike,
    out_path: str | os.PathLike,
    make_processor: Callable[[float, int], Callable[[np.ndarray], np.ndarray]],
    allow_clipping: bool = False,
    progress: bool = True,
    chunk_frames: int = CHUNK_FRAMES,
    match_loudness: bool = False,
    ceiling_dbfs: float = 0.0,
) -> dict[str, float]:
    """Stream ``in_path`` through a stateful block processor into ``out_path``, in bounded memory.

    ``make_processor(sample_rate, channels)`` returns a fresh processor ``block -> block``. A first pass measures
    the output's peak (and, with ``match_loudness``, the input's and the output's integrated loudness); the second
    pass writes the output with the gain ``dsp.loudness.match_and_guard`` decides: the loudness match, then, unless
    ``allow_clipping``, the anti-clip rule (a peak above ``ceiling_dbfs`` is brought down to it). Output keeps the
    input's rate, channel count and sample format. Returns ``{"sample_rate", "channels", "frames", "peak",
    "scale_db", "match_db", "clip_db"}`` (``scale_db`` = the whole gain applied)."""
    from pedalboard.io import AudioFile
    from tqdm import tqdm

    from .loudness import LoudnessMeter, match_and_guard

    rate, channels, frames = audio_info(in_path)
    stored = source_dtype(in_path)
    if frames == 0:
        raise AudioFileError(f"{in_path}: contains no audio (zero length)")
    show = progress and frames > 30 * rate
    measure = match_loudness or not allow_clipping
    bar = tqdm(total=frames * (2 if measure else 1), unit="frame", unit_scale=True, disable=not show, leave=False)

    match_db = clip_db = 0.0
    if measure:
        process = make_processor(rate, channels)
        meters = (LoudnessMeter(rate, channels), LoudnessMeter(rate, channels)) if match_loudness else None
        peak = 0.0
        for chunk in iter_chunks(in_path, chunk_frames):
            y = process(chunk)
            peak = max(peak, float(np.max(np.abs(y), initial=0.0)))
            if meters:
                meters[0].add(chunk)
                meters[1].add(y)
            bar.update(chunk.shape[-1])
        peak_db = 20.0 * math.log10(peak) if peak > 0 else -240.0
        gain = match_and_guard(meters[0].lufs() if meters else 0.0, meters[1].lufs() if meters else 0.0, peak_db,
                               match=match_loudness, ceiling_dbfs=math.inf if allow_clipping else ceiling_dbfs)
        match_db, clip_db = gain.match_db, gain.clip_db
    scale = np.float32(10 ** ((match_db + clip_db) / 20))
    process = make_processor(rate, channels)
    out_peak = 0.0
    with atomic_output(out_path) as tmp:
        try:
            writer = AudioFile(tmp, "w", samplerate=rate, num_channels=channels,
                               **_writer_options(out_path, stored))
        except Exception as err:
            raise AudioFileError(f"{out_path}: cannot write audio ({_first_line(err)})") from None
        try:
            with writer:
                for chunk in iter_chunks(in_path, chunk_frames):
                    y = process(chunk)
                    if scale != 1.0:
                        y = y * scale
                    out_peak = max(out_peak, float(np.max(np.abs(y), initial=0.0)))
                    writer.write(y)
                    bar.update(chunk.shape[-1])
        except RuntimeError as err:  # pedalboard's word for a failed write: a full disk, a quota, an I/O error
            raise AudioFileError(f"{out_path}: cannot write audio ({_first_line(err)}; is the disk full?); "
                                 "nothing was written") from None
    bar.close()
    return {
        "sample_rate": rate,
        "channels": channels,
        "frames": frames,
        "peak": out_peak,
        "scale_db": match_db + clip_db,
        "match_db": match_db,
        "clip_db": clip_db,
    }


MIN_LISTEN_SECONDS = 0.05  # shorter than this, there is no timbre to hear
SILENT_PEAK_DBFS = -80.0  # a peak below this is silence (or a noise floor)


def check_listenable(audio: np.ndarray, rate: float, path: str | os.PathLike) -> None:
    """Refuse audio too short or too quiet to describe: what the model would say of it means nothing (a silent
    file scored higher "bright" than a real note). One rule for eq, embed and similarity."""
    from .descriptors import peak_dbfs

    if audio.shape[-1] < MIN_LISTEN_SECONDS * rate:
        raise AudioFileError(f"{path}: too short ({audio.shape[-1] / rate * 1000:.0f} ms; at least "
                             f"{MIN_LISTEN_SECONDS * 1000:.0f} ms needed)")
    level = peak_dbfs(audio)
    if level < SILENT_PEAK_DBFS:
        raise AudioFileError(f"{path}: silent (peak {max(level, -240):.0f} dBFS)")
