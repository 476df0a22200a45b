"""Audio in requests: checked against the limits, decoded with soundfile, resampled and turned into
Whisper's log-mel features in numpy.

Decoding: ``soundfile`` (libsndfile, whose wheel bundles WAV, FLAC, OGG/Vorbis/Opus and MP3 support),
imported on first use so text and image functions never load it. Limits are checked before work:
the compressed size before base64 decoding and before libsndfile sees the bytes, the duration from
the header (``soundfile.info``) before any sample is decoded. A file that decodes to fewer frames
than its header declares is truncated: 400, as is anything libsndfile cannot open.

Resampling: windowed-sinc (Hann window, 6 zero crossings, roll-off 0.99), the arithmetic of
torchaudio's ``functional.resample`` default (which transformers' ASR pipeline calls when the rate
differs), done polyphase with one matrix product per block of input. Measured 44.1 -> 16 kHz: level
within 0.5% up to 5 kHz, -1.8 dB at 7 kHz (the filter's transition band below the 8 kHz Nyquist
frequency), -55 dB at 12 kHz (what would alias); a 440 Hz tone matches the analytic tone to ~2e-4
of full scale (tests/functions/test_speech.py).

Features: transformers' WhisperFeatureExtractor (pad to 30 s, or keep a longer recording whole as the
pipeline's long-form input does, 400-point periodic-Hann STFT
with reflect padding, hop 160, power spectrum, Slaney mel filters, log10, floor at max - 8, then
(x + 4) / 4), computed in float64 and cast, equal to the extractor's to ~1e-5.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
from functools import lru_cache

import numpy as np

from .errors import BadRequest, PayloadTooLarge
from .inputs import AUDIO_WANTS as WANTS
from .settings import AudioLimits
# Containers libsndfile may open for a request: the common ones only, keeping its many rarer
# readers (and their attack surface) out of reach.
FORMATS = ("WAV", "WAVEX", "RF64", "FLAC", "OGG", "MP3", "AIFF")


# -- bytes -------------------------------------------------------------------------------------------

def audio_bytes(data: bytes | str, where: str, limits: AudioLimits) -> bytes:
    """The compressed audio bytes; base64 text (or a ``data:`` URL) is decoded after a size check."""
    if isinstance(data, str):
        if data.startswith("data:"):
            head, _, data = data.partition(",")
            if not head.endswith(";base64"):
                raise BadRequest(f"{where} is a data: URL without ;base64", hint="send base64-encoded audio bytes")
        if len(data) // 2 > limits.max_bytes:  # far too large: refused before even copying it
            _too_many_bytes(where, len(data) * 3 // 4, limits)
        data = "".join(data.split())  # MIME base64 wraps lines
        if len(data) * 3 // 4 > limits.max_bytes:
            _too_many_bytes(where, len(data) * 3 // 4, limits)
        try:
            data = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest(f"{where} is not valid base64", hint=f"send {WANTS}, base64-encoded") from None
    if len(data) > limits.max_bytes:
        _too_many_bytes(where, len(data), limits)
    if not data:
        raise BadRequest(f"{where} is empty", hint=f"send {WANTS}")
    return data


def _too_many_bytes(where: str, size: int, limits: AudioLimits):
    raise PayloadTooLarge(f"{where} has {size} bytes; this model takes recordings of at most {limits.max_bytes} bytes",
                          hint="send a shorter or more compressed recording")


# -- decoding ----------------------------------------------------------------------------------------

def decode_audio(data: bytes, where: str, limits: AudioLimits) -> tuple[np.ndarray, int]:
    """(mono float32 samples in [-1, 1], sample rate): 400 for what is not a supported recording or is
    truncated or corrupt, 413 for one longer than the limit (known from the header, before decoding)."""
    import soundfile as sf

    try:
        info = sf.info(io.BytesIO(data))
    except Exception:  # noqa: BLE001 - libsndfile's errors (LibsndfileError, RuntimeError, TypeError)
        raise BadRequest(f"{where} is not {WANTS}") from None
    if info.format not in FORMATS:
        raise BadRequest(f"{where} is {info.format} audio, which is not supported", hint=f"send {WANTS}")
    if info.samplerate < 1 or info.channels < 1:
        raise BadRequest(f"{where} has no audio ({info.channels} channels at {info.samplerate} Hz)")
    seconds = info.frames / info.samplerate
    if seconds > limits.max_seconds:
        raise PayloadTooLarge(f"{where} is {seconds:.1f} s long; this model takes at most {limits.max_seconds:g} s "
                              "per request", hint="split the recording")
    if info.frames < 1:
        raise BadRequest(f"{where} has no audio samples")
    # libsndfile counts a cut WAV's frames from the bytes present and reads them without complaint;
    # the RIFF header's own size says whether bytes are missing (0 and ~4 GiB mean "unknown", as
    # streaming writers leave them).
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        declared = int.from_bytes(data[4:8], "little") + 8
        if 8 < declared < 0xFFFFFFF0 and declared > len(data):
            raise BadRequest(f"{where} is truncated: its header declares {declared} bytes, {len(data)} arrived")
    try:
        # A frame bound: a header that understates its length never makes libsndfile decode more.
        samples, rate = sf.read(io.BytesIO(data), frames=info.frames + 1, dtype="float32", always_2d=True)
    except Exception as exc:  # noqa: BLE001 - every decoder fault of the caller's file is a 400
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadRequest(f"{where} cannot be decoded (truncated or corrupt: {reason})") from None
    # MP3 headers give an estimate; the exact containers must deliver every frame they declare.
    if len(samples) < (info.frames * 0.98 if info.format == "MP3" else info.frames) or not len(samples):
        raise BadRequest(f"{where} is truncated: {len(samples)} of {info.frames} frames decode")
    if not np.all(np.isfinite(samples)):
        raise BadRequest(f"{where} has samples that are not finite numbers")
    # Mono as transformers' pipeline mixes it: the mean of the channels.
    mono = samples[:, 0] if samples.shape[1] == 1 else samples.mean(axis=1, dtype=np.float32)
    return np.ascontiguousarray(mono, dtype=np.float32), int(rate)


# -- resampling --------------------------------------------------------------------------------------

LOWPASS_WIDTH = 6  # zero crossings of the sinc on each side (torchaudio's default)
ROLLOFF = 0.99  # cutoff as a fraction of the lower Nyquist frequency


@lru_cache(maxsize=8)
def _sinc_kernels(orig: int, new: int) -> tuple[np.ndarray, int]:
    """One Hann-windowed sinc per output phase: (new, 2 * width + orig) weights, and the width."""
    base = min(orig, new) * ROLLOFF
    width = math.ceil(LOWPASS_WIDTH * orig / base)
    idx = np.arange(-width, width + orig, dtype=np.float64) / orig
    t = (np.arange(0, -new, -1, dtype=np.float64)[:, None] / new + idx[None, :]) * base
    t = np.clip(t, -LOWPASS_WIDTH, LOWPASS_WIDTH)
    window = np.cos(t * math.pi / LOWPASS_WIDTH / 2) ** 2
    t *= math.pi
    with np.errstate(invalid="ignore", divide="ignore"):
        kernels = np.where(t == 0, 1.0, np.sin(t) / t)
    return kernels * window * (base / orig), width


def resample(samples: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """``samples`` at ``new_rate``: ceil(len * new / orig) samples, windowed-sinc interpolated."""
    if orig_rate == new_rate:
        return samples
    gcd = math.gcd(orig_rate, new_rate)
    orig, new = orig_rate // gcd, new_rate // gcd
    kernels, width = _sinc_kernels(orig, new)
    length = len(samples)
    padded = np.pad(samples.astype(np.float64), (width, width + orig))
    # Every orig-th window of the padded input gives `new` output samples, one per phase.
    frames = np.lib.stride_tricks.sliding_window_view(padded, kernels.shape[1])[::orig]
    out = (frames @ kernels.T).reshape(-1)
    return out[:math.ceil(new * length / orig)].astype(np.float32)


# -- log-mel features --------------------------------------------------------------------------------

def _hz_to_mel(freq: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    freq = np.asarray(freq, dtype=np.float64)
    mels = 3.0 * freq / 200.0
    log_region = freq >= 1000.0
    mels[log_region] = 15.0 + np.log(freq[log_region] / 1000.0) * (27.0 / np.log(6.4))
    return mels


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    freq = 200.0 * mels / 3.0
    log_region = mels >= 15.0
    freq[log_region] = 1000.0 * np.exp(np.log(6.4) * (mels[log_region] - 15.0) / 27.0)
    return freq


@lru_cache(maxsize=4)
def mel_filters(n_fft: int, n_mels: int, sampling_rate: int) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels) Slaney-normalized triangular filters from 0 Hz to 8 kHz, as
    transformers' mel_filter_bank builds them for WhisperFeatureExtractor."""
    fft_freqs = np.linspace(0, sampling_rate // 2, n_fft // 2 + 1)
    mel = np.linspace(_hz_to_mel(np.array([0.0]))[0], _hz_to_mel(np.array([8000.0]))[0], n_mels + 2)
    edges = _mel_to_hz(mel)
    diff = np.diff(edges)
    slopes = edges[None, :] - fft_freqs[:, None]
    down = -slopes[:, :-2] / diff[:-1]
    up = slopes[:, 2:] / diff[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    return filters * (2.0 / (edges[2:n_mels + 2] - edges[:n_mels]))[None, :]


_FRAMES_PER_BLOCK = 3000


def log_mel(samples: np.ndarray, *, n_mels: int = 80, n_fft: int = 400, hop_length: int = 160,
            n_samples: int = 480_000, sampling_rate: int = 16_000) -> np.ndarray:
    """Whisper's input features for one recording at ``sampling_rate``: (n_mels, n_samples // hop) float32,
    the samples padded or cut to ``n_samples`` (a long recording passes its own length, as the
    pipeline's ``padding="longest", truncation=False`` does)."""
    audio = np.zeros(n_samples, dtype=np.float64)
    take = min(len(samples), n_samples)
    audio[:take] = samples[:take]
    half = n_fft // 2
    padded = np.pad(audio, (half, half), mode="reflect")
    window = np.hanning(n_fft + 1)[:-1]  # periodic Hann, as torch.hann_window / window_function
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop_length][:-1]  # the last frame is dropped
    filters = mel_filters(n_fft, n_mels, sampling_rate)
    spec = np.empty((len(frames), n_mels), dtype=np.float64)
    # A window's frames at a time: a long recording's float64 spectra are never all held at once.
    for lo in range(0, len(frames), _FRAMES_PER_BLOCK):
        block = frames[lo:lo + _FRAMES_PER_BLOCK]
        spec[lo:lo + len(block)] = np.abs(np.fft.rfft(block * window, n=n_fft, axis=1)) ** 2 @ filters
    spec = np.log10(np.maximum(spec, 1e-10)).T
    spec = np.maximum(spec, spec.max() - 8.0)  # over the whole recording, as the extractor does
    return ((spec + 4.0) / 4.0).astype(np.float32)


def read_features(data: bytes | str, where: str, limits: AudioLimits, *, n_mels: int = 80, n_fft: int = 400,
                  hop_length: int = 160, n_samples: int = 480_000, sampling_rate: int = 16_000) -> np.ndarray:
    """Check, decode, resample and featurize one request recording: (n_mels, frames) float32."""
    samples, rate = decode_audio(audio_bytes(data, where, limits), where, limits)
    return log_mel(resample(samples, rate, sampling_rate), n_mels=n_mels, n_fft=n_fft, hop_length=hop_length,
                   n_samples=n_samples, sampling_rate=sampling_rate)


__all__ = ["FORMATS", "WANTS", "audio_bytes", "decode_audio", "log_mel", "mel_filters", "read_features", "resample"]
