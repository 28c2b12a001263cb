"""Google Speech Commands v2 as 12-class keyword spotting with the MLPerf Tiny KWS MFCC front end.

Layout (as torchaudio keeps it): ``<data_dir>/SpeechCommands/speech_commands_v0.02/<word>/<file>.wav``
with ``validation_list.txt``, ``testing_list.txt`` and ``_background_noise_/*.wav``; ``data_dir`` may
also point at the ``speech_commands_v0.02`` folder itself. WAVs are read with ``scipy.io.wavfile``.

Classes (MLPerf Tiny KWS order): 0..9 = yes, no, up, down, left, right, on, off, stop, go;
10 = silence; 11 = unknown (every other word folder).

Splits: train = clips listed in neither ``validation_list.txt`` nor ``testing_list.txt``; test = the
clips in ``testing_list.txt`` (the official test split). Validation-list clips are not used.

Silence (our documented choice): each split gets ``ceil(0.1 * number of word clips)`` silence clips
(TF's ``silence_percentage=10`` convention). A silence clip is a 1 s window (16000 samples) cut at a
seeded random position from a ``_background_noise_`` recording, the file chosen with probability
proportional to its length. Train windows come from the first 80 % of every recording and test windows
from the last 20 %, so train and test silence share no audio (a recording whose last 20 % is shorter
than 1 s is used whole for test). No random volume is applied: the MLPerf pipeline peak-normalises every
clip, which would cancel any volume factor anyway.

Waveform steps per clip (MLPerf Tiny ``get_dataset.py``): scale integer PCM to [-1, 1], pad with zeros
or trim at the end to 16000 samples, divide by the clip's peak (MLPerf divides by ``reduce_max``, the
signed maximum; we divide by the maximum of ``|x|`` so that all-zero clips stay zero and no NaN can
appear), clip to [-1, 1].

MFCC front end, reproducing MLPerf Tiny's TensorFlow ops exactly in torch:

* ``tf.signal.stft(x, frame_length=480, frame_step=320, fft_length=None -> 512, window_fn=hann_window)``:
  frames of 480 samples every 320 samples without padding (16000 samples -> 49 frames), multiplied by a
  periodic Hann window of length 480, zero-padded at the end to 512, real FFT -> 257 bins;
  ``tf.abs`` -> magnitude (not power).
* ``tf.signal.linear_to_mel_weight_matrix(40, 257, 16000, 20.0, 4000.0)``: HTK mel scale
  ``1127 ln(1 + f/700)``, triangles that are linear *in mel*, DC bin zeroed, no area normalisation.
* ``tf.math.log(mel + 1e-6)``.
* ``tf.signal.mfccs_from_log_mel_spectrograms(log_mel)[..., :10]``: TF's unnormalised DCT-II
  (``2 sum x_n cos(pi k (2n+1) / 2N)``) times ``1/sqrt(2N)``, N = 40. That equals the orthonormal
  DCT-II (``torchaudio.functional.create_dct(10, 40, norm='ortho')``) except that coefficient 0 is
  larger by sqrt(2); we use TF's scaling so features match the reference numerically.

We do not use ``torchaudio.transforms.MelSpectrogram``: with ``win_length=480 < n_fft=512`` torch
centres the window inside a 512-sample frame (a 16-sample shift against TF) and torchaudio's mel
triangles are linear in Hz, so it would not reproduce the TF features.

Result per clip: float32 tensor (1, 49, 10). Features are cached in a ``.pt`` file in the dataset folder;
the file name holds a hash of all settings and of the file listing, so changed settings or files
produce a new cache. A cache that cannot be written only logs a warning.

Class weights (loss reweighting as in Borras et al. 2022): with p the training class frequencies,
``w = 1 - p``, ``w[unknown] /= 3.6``, ``w /= w.sum()``; computed on the full training split.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from .base import DatasetSplits, locate_files, missing_files_error, reject_augment

log = logging.getLogger(__name__)

WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SILENCE_INDEX = 10
UNKNOWN_INDEX = 11
CLASSES = WORDS + ("silence", "unknown")
FOLDER = "speech_commands_v0.02"
BACKGROUND_FOLDER = "_background_noise_"
TESTING_LIST = "testing_list.txt"
VALIDATION_LIST = "validation_list.txt"

SAMPLE_RATE = 16000  # Hz
CLIP_SAMPLES = 16000  # 1 s
WINDOW_SAMPLES = 480  # 30 ms
STRIDE_SAMPLES = 320  # 20 ms
FFT_LENGTH = 512
NUM_MEL_BINS = 40
MEL_LOW_HZ = 20.0
MEL_HIGH_HZ = 4000.0
LOG_OFFSET = 1e-6
NUM_MFCC = 10
NUM_FRAMES = 1 + (CLIP_SAMPLES - WINDOW_SAMPLES) // STRIDE_SAMPLES  # 49

SILENCE_FRACTION = 0.1  # silence clips per word clip in each split
BACKGROUND_TEST_FRACTION = 0.2  # tail of each noise recording reserved for test silence
SILENCE_SEED = 1234
SHUFFLE_SEED = 4321
UNKNOWN_WEIGHT_DIVISOR = 3.6
CACHE_VERSION = 1
CACHE_PREFIX = "walking_noise_mfcc_"
FEATURE_CHUNK = 1024  # clips per MFCC batch (bounds memory on the 100k-clip dataset)

_HOW_TO_GET = (
    "Get Google Speech Commands v0.02 (speech_commands_v0.02.tar.gz) and extract it to "
    "<data_dir>/SpeechCommands/speech_commands_v0.02/, e.g. on a machine with internet run "
    "load_dataset('speech_commands', data_dir, download=True) or "
    "torchaudio.datasets.SPEECHCOMMANDS(root=data_dir, download=True)."
)


# ----------------------------------------------------------------------------------------------------
# Audio front end
# ----------------------------------------------------------------------------------------------------


def hz_to_mel(f_hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale as TF uses it: ``1127 * ln(1 + f / 700)`` (f in Hz)."""
    return 1127.0 * np.log1p(np.asarray(f_hz, dtype=np.float64) / 700.0)


def mel_weight_matrix(
    num_mel_bins: int = NUM_MEL_BINS,
    num_spectrogram_bins: int = FFT_LENGTH // 2 + 1,
    sample_rate: int = SAMPLE_RATE,
    lower_hz: float = MEL_LOW_HZ,
    upper_hz: float = MEL_HIGH_HZ,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Equivalent of ``tf.signal.linear_to_mel_weight_matrix``: (num_spectrogram_bins, num_mel_bins).

    Computed in float64, returned as ``dtype``.

    Bin k of the spectrogram sits at ``k * (sr/2) / (num_spectrogram_bins - 1)`` Hz; band edges are
    ``num_mel_bins + 2`` points evenly spaced in mel between ``lower_hz`` and ``upper_hz``; the DC bin
    gets weight 0.
    """
    bin_mel = hz_to_mel(np.linspace(0.0, sample_rate / 2.0, num_spectrogram_bins))[1:, None]
    edges = np.linspace(hz_to_mel(lower_hz), hz_to_mel(upper_hz), num_mel_bins + 2)
    low, centre, high = edges[None, :-2], edges[None, 1:-1], edges[None, 2:]
    rising = (bin_mel - low) / (centre - low)
    falling = (high - bin_mel) / (high - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights = np.concatenate([np.zeros((1, num_mel_bins)), weights], axis=0)
    return torch.from_numpy(weights).to(dtype)


def mfcc_dct_matrix(
    num_mfcc: int = NUM_MFCC, num_mel_bins: int = NUM_MEL_BINS, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """DCT as in ``tf.signal.mfccs_from_log_mel_spectrograms``: (num_mel_bins, num_mfcc) as ``dtype``.

    Entry (n, k) = ``2 cos(pi k (2n + 1) / (2N)) / sqrt(2N)``: TF's unnormalised DCT-II scaled by
    ``rsqrt(2N)``; equals the orthonormal DCT-II except column 0 is sqrt(2) larger.
    """
    n = np.arange(num_mel_bins, dtype=np.float64)[:, None]
    k = np.arange(num_mfcc, dtype=np.float64)[None, :]
    dct = 2.0 * np.cos(np.pi * k * (2.0 * n + 1.0) / (2.0 * num_mel_bins)) / np.sqrt(2.0 * num_mel_bins)
    return torch.from_numpy(dct).to(dtype)


class MfccFrontEnd:
    """Waveforms (B, 16000) float in [-1, 1] -> MFCC features (B, 1, 49, 10).

    Runs in float32 like the TF reference; ``dtype=torch.float64`` exists for verification (float32
    rounding moves coefficients by up to ~1e-2 in absolute value against float64).
    """

    def __init__(self, dtype: torch.dtype = torch.float32) -> None:
        self.dtype = dtype
        self.window = torch.hann_window(WINDOW_SAMPLES, periodic=True, dtype=dtype)
        self.mel = mel_weight_matrix(dtype=dtype)
        self.dct = mfcc_dct_matrix(dtype=dtype)

    def __call__(self, waveforms: torch.Tensor) -> torch.Tensor:
        if waveforms.dim() != 2 or waveforms.shape[1] != CLIP_SAMPLES:
            raise ValueError(f"expected waveforms of shape (B, {CLIP_SAMPLES}), got {tuple(waveforms.shape)}")
        frames = waveforms.to(self.dtype).unfold(-1, WINDOW_SAMPLES, STRIDE_SAMPLES)  # (B, 49, 480)
        magnitude = torch.fft.rfft(frames * self.window, n=FFT_LENGTH).abs()  # (B, 49, 257)
        log_mel = torch.log(magnitude @ self.mel + LOG_OFFSET)  # (B, 49, 40)
        return (log_mel @ self.dct).unsqueeze(1)  # (B, 1, 49, 10)

    @staticmethod
    def describe() -> dict:
        return {
            "sample_rate_hz": SAMPLE_RATE,
            "clip_samples": CLIP_SAMPLES,
            "window": f"periodic hann, {WINDOW_SAMPLES} samples",
            "stride_samples": STRIDE_SAMPLES,
            "fft_length": FFT_LENGTH,
            "spectrum": "magnitude",
            "mel": {"bins": NUM_MEL_BINS, "low_hz": MEL_LOW_HZ, "high_hz": MEL_HIGH_HZ, "scale": "htk, tf-style"},
            "log_offset": LOG_OFFSET,
            "dct": "tf mfccs_from_log_mel_spectrograms scaling (ortho DCT-II, c0 x sqrt(2))",
            "num_mfcc": NUM_MFCC,
            "output_shape": [1, NUM_FRAMES, NUM_MFCC],
            "waveform": "int PCM -> [-1,1], pad/trim end to 16000, divide by max|x|, clip [-1,1]",
        }


def read_wav(path: str | os.PathLike) -> np.ndarray:
    """Read a 16 kHz WAV as float32 mono in [-1, 1] (integer PCM divided by its full scale)."""
    from scipy.io import wavfile  # lazy: keeps `import walking_noise.data` light

    rate, data = wavfile.read(path)
    if rate != SAMPLE_RATE:
        raise ValueError(f"{path}: sample rate {rate} Hz, expected {SAMPLE_RATE} Hz (no resampling is done)")
    if data.dtype == np.int16:
        x = data.astype(np.float32) / 32768.0
    elif data.dtype == np.int32:
        x = data.astype(np.float32) / 2147483648.0
    elif data.dtype == np.uint8:
        x = (data.astype(np.float32) - 128.0) / 128.0
    elif np.issubdtype(data.dtype, np.floating):
        x = data.astype(np.float32)
    else:
        raise ValueError(f"{path}: unsupported WAV sample type {data.dtype}")
    if x.ndim == 2:
        x = x.mean(axis=1)
    return x


def fit_length(x: np.ndarray, n: int = CLIP_SAMPLES) -> np.ndarray:
    """Zero-pad at the end or trim the end to exactly ``n`` samples."""
    if x.shape[0] >= n:
        return x[:n]
    return np.pad(x, (0, n - x.shape[0]))


def prepare_waveform(x: np.ndarray) -> np.ndarray:
    """MLPerf waveform step: length 16000, divide by peak |x| (all-zero clips stay zero), clip to [-1, 1]."""
    x = fit_length(np.asarray(x, dtype=np.float32))
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak > 0.0:
        x = x / peak
    return np.clip(x, -1.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------------------------------
# File discovery and splits
# ----------------------------------------------------------------------------------------------------


def _candidate_roots(root: Path) -> list[Path]:
    return [root / "SpeechCommands" / FOLDER, root / FOLDER, root]


def find_root(root: Path) -> Path | None:
    """Return the ``speech_commands_v0.02`` folder under ``root`` (or ``root`` itself), else None."""
    for folder in _candidate_roots(root):
        if (folder / TESTING_LIST).is_file() and (folder / VALIDATION_LIST).is_file() and (folder / BACKGROUND_FOLDER).is_dir():
            return folder
    return None


def label_of(word: str) -> int:
    """Class index of a word folder: 0..9 for the ten keywords, 11 (unknown) for any other word."""
    return WORDS.index(word) if word in WORDS else UNKNOWN_INDEX


def _read_list(path: Path) -> set[str]:
    return {line.strip().replace("\\", "/") for line in path.read_text().splitlines() if line.strip()}


def list_word_clips(folder: Path) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Return (train, test) lists of (relative path, label), sorted by path.

    Train = clips in neither list file, test = clips in ``testing_list.txt``.
    """
    testing, validation = _read_list(folder / TESTING_LIST), _read_list(folder / VALIDATION_LIST)
    train: list[tuple[str, int]] = []
    test: list[tuple[str, int]] = []
    for word_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
        label = label_of(word_dir.name)
        for wav in sorted(word_dir.glob("*.wav")):
            rel = f"{word_dir.name}/{wav.name}"
            if rel in testing:
                test.append((rel, label))
            elif rel not in validation:
                train.append((rel, label))
    missing = len(testing) - len(test)
    if missing:
        log.warning("%d entries of %s have no WAV file on disk; they are skipped", missing, folder / TESTING_LIST)
    return train, test


def background_files(folder: Path) -> list[Path]:
    """The ``_background_noise_/*.wav`` recordings, sorted by name; raises if there are none."""
    files = sorted((folder / BACKGROUND_FOLDER).glob("*.wav"))
    if not files:
        raise missing_files_error(
            "speech_commands", [folder / BACKGROUND_FOLDER / "*.wav"], "The silence class is cut from these recordings. " + _HOW_TO_GET
        )
    return files


def background_region(n_samples: int, split: str) -> tuple[int, int]:
    """Sample range [start, stop) of a noise recording used for ``split``'s silence clips."""
    boundary = int(math.floor((1.0 - BACKGROUND_TEST_FRACTION) * n_samples))
    if split == "train":
        return (0, boundary) if boundary >= CLIP_SAMPLES else (0, n_samples)
    return (boundary, n_samples) if n_samples - boundary >= CLIP_SAMPLES else (0, n_samples)


def silence_clips(recordings: Sequence[np.ndarray], count: int, split: str, seed: int = SILENCE_SEED) -> list[np.ndarray]:
    """Cut ``count`` 1 s windows from the noise recordings' ``split`` regions at seeded random positions."""
    rng = np.random.RandomState(seed + (0 if split == "train" else 1))
    regions = [background_region(len(r), split) for r in recordings]
    lengths = np.array([stop - start for start, stop in regions], dtype=np.float64)
    probs = lengths / lengths.sum()
    clips = []
    for _ in range(count):
        i = int(rng.choice(len(recordings), p=probs))
        start, stop = regions[i]
        offset = start + int(rng.randint(0, max(stop - start - CLIP_SAMPLES, 0) + 1))
        clips.append(fit_length(recordings[i][offset : offset + CLIP_SAMPLES]))
    return clips


def class_weights_from_labels(labels: torch.Tensor, num_classes: int = len(CLASSES)) -> torch.Tensor:
    """Borras et al. 2022 reweighting: ``w = 1 - p``, ``w[unknown] /= 3.6``, normalised to sum 1 (float32)."""
    counts = torch.bincount(labels.to(torch.int64), minlength=num_classes).to(torch.float64)
    p = counts / counts.sum()
    w = 1.0 - p
    w[UNKNOWN_INDEX] /= UNKNOWN_WEIGHT_DIVISOR
    return (w / w.sum()).to(torch.float32)


# ----------------------------------------------------------------------------------------------------
# Feature computation and cache
# ----------------------------------------------------------------------------------------------------


def _featurize(sources: Iterable[Path | np.ndarray], front_end: MfccFrontEnd) -> torch.Tensor:
    """MFCCs for a sequence of WAV paths or raw waveforms, computed in chunks of FEATURE_CHUNK."""
    out: list[torch.Tensor] = []
    batch: list[np.ndarray] = []

    def flush() -> None:
        if batch:
            out.append(front_end(torch.from_numpy(np.stack(batch))))
            batch.clear()

    for src in sources:
        batch.append(prepare_waveform(read_wav(src) if isinstance(src, Path) else src))
        if len(batch) == FEATURE_CHUNK:
            flush()
    flush()
    if not out:
        return torch.zeros((0, 1, NUM_FRAMES, NUM_MFCC), dtype=torch.float32)
    return torch.cat(out)


def _settings() -> dict:
    return {
        "cache_version": CACHE_VERSION,
        "front_end": MfccFrontEnd.describe(),
        "classes": list(CLASSES),
        "silence": {
            "fraction_of_word_clips": SILENCE_FRACTION,
            "background_test_fraction": BACKGROUND_TEST_FRACTION,
            "seed": SILENCE_SEED,
        },
        "shuffle_seed": SHUFFLE_SEED,
    }


def _cache_path(folder: Path, train: list, test: list, bg: list[Path]) -> Path:
    """Cache file name: hash of the settings and of the file listing (paths, sizes, list files)."""
    h = hashlib.sha256(json.dumps(_settings(), sort_keys=True).encode())
    for rel, label in train + test:
        h.update(f"{rel}|{label}|{(folder / rel).stat().st_size}\n".encode())
    for p in bg:
        h.update(f"bg|{p.name}|{p.stat().st_size}\n".encode())
    for name in (TESTING_LIST, VALIDATION_LIST):
        h.update((folder / name).read_bytes())
    return folder / f"{CACHE_PREFIX}{h.hexdigest()[:16]}.pt"


def _build_split(
    folder: Path, words: list[tuple[str, int]], recordings: list[np.ndarray], split: str, front_end: MfccFrontEnd
) -> tuple[torch.Tensor, torch.Tensor]:
    n_silence = math.ceil(SILENCE_FRACTION * len(words))
    silence = silence_clips(recordings, n_silence, split)
    sources: list[Path | np.ndarray] = [folder / rel for rel, _ in words] + silence
    labels = np.array([label for _, label in words] + [SILENCE_INDEX] * n_silence, dtype=np.int64)
    order = np.random.RandomState(SHUFFLE_SEED + (0 if split == "train" else 1)).permutation(len(sources))
    x = _featurize((sources[i] for i in order), front_end)
    return x, torch.from_numpy(labels[order])


def _load_features(folder: Path) -> tuple[dict, Path]:
    train, test = list_word_clips(folder)
    bg = background_files(folder)
    cache = _cache_path(folder, train, test, bg)
    if cache.is_file():
        try:
            data = torch.load(cache, map_location="cpu", weights_only=True)
            if all(k in data for k in ("train_x", "train_y", "test_x", "test_y")):
                return data, cache
        except Exception as exc:  # a corrupt cache is rebuilt, never fatal
            log.warning("ignoring unreadable feature cache %s (%s)", cache, exc)
    recordings = [read_wav(p) for p in bg]
    front_end = MfccFrontEnd()
    train_x, train_y = _build_split(folder, train, recordings, "train", front_end)
    test_x, test_y = _build_split(folder, test, recordings, "test", front_end)
    data = {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}
    tmp = cache.with_name(cache.name + f".tmp{os.getpid()}")
    try:
        torch.save(data, tmp)
        os.replace(tmp, cache)
    except OSError as exc:
        log.warning("could not write feature cache %s (%s); features will be recomputed next time", cache, exc)
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
    return data, cache


def _searched(root: Path) -> list[Path]:
    return [d / name for d in _candidate_roots(root) for name in (TESTING_LIST, VALIDATION_LIST, BACKGROUND_FOLDER)]


def _fetch(root: Path) -> None:
    import torchaudio  # lazy: only needed for fetching

    torchaudio.datasets.SPEECHCOMMANDS(root=str(root), download=True)


def load_speech_commands(
    data_dir: str | os.PathLike | None = None,
    *,
    normalize: bool | None = None,
    augment: bool | None = None,
    download: bool = False,
) -> DatasetSplits:
    """Load GSC v2 as 12-class KWS MFCCs, float32 (N, 1, 49, 10), with class weights.

    ``normalize=True`` standardises each of the 10 MFCC coefficients with the training split's mean and
    std (default False: raw MFCCs as in MLPerf). Augmentation is not supported (MLPerf's background-noise
    mixing acts on waveforms, not on cached features).
    """
    reject_augment("speech_commands", augment, "MLPerf's augmentation mixes background noise into waveforms, while "
                                               "this loader serves precomputed MFCCs")
    normalize = bool(normalize) if normalize is not None else False
    folder = locate_files("speech_commands", data_dir, find_root, _searched, _HOW_TO_GET, download, _fetch)

    data, cache = _load_features(folder)
    train_x, train_y, test_x, test_y = data["train_x"], data["train_y"], data["test_x"], data["test_y"]
    weights = class_weights_from_labels(train_y)
    mean = std = None
    if normalize:
        m = train_x.mean(dim=(0, 1, 2), keepdim=True)
        s = train_x.std(dim=(0, 1, 2), keepdim=True).clamp_min(1e-8)
        train_x, test_x = (train_x - m) / s, (test_x - m) / s
        mean, std = m.flatten().tolist(), s.flatten().tolist()
    preprocessing = {
        "source": f"Google Speech Commands v0.02 in {folder}",
        "classes": list(CLASSES),
        **_settings(),
        "split": "train = not in validation/testing lists; test = testing_list.txt; validation list unused",
        "silence_policy": (
            "ceil(0.1 * word clips) per split; 1 s windows at seeded random positions of _background_noise_ "
            "recordings (train: first 80% of each, test: last 20%); no volume scaling (peak-normalised anyway)"
        ),
        "normalize": normalize,
        "mean": mean,
        "std": std,
        "augment": None,
        "class_weights": weights.tolist(),
        "class_weights_formula": "w = 1 - p_train; w[unknown] /= 3.6; w /= sum(w)",
        "train_class_counts": torch.bincount(train_y, minlength=len(CLASSES)).tolist(),
        "test_class_counts": torch.bincount(test_y, minlength=len(CLASSES)).tolist(),
        "cache_file": str(cache),
    }
    return DatasetSplits(
        name="speech_commands",
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        num_classes=len(CLASSES),
        input_shape=(1, NUM_FRAMES, NUM_MFCC),
        class_weights=weights,
        preprocessing=preprocessing,
        augment=None,
    )
