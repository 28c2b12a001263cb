"""Tests for walking_noise.data: tiny files in each real on-disk format, loaded through load_dataset."""

from __future__ import annotations

import gzip
import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import wavfile

from walking_noise.data import DATASET_SHAPES, DATASETS, DEFAULT_DATASET, DatasetSplits, load_dataset
from walking_noise.data import cifar10 as cifar_mod
from walking_noise.data import mnist as mnist_mod
from walking_noise.data import speech_commands as gsc

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


# ------------------------------------------------------------------------------------------------
# helpers writing tiny files in the real formats
# ------------------------------------------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    """IDX: big-endian magic, one big-endian uint32 per dimension, raw uint8 data; .gz if the name says so."""
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def tiny_mnist(n_train: int = 5, n_test: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.RandomState(0)
    return {
        "train-images-idx3-ubyte": rng.randint(0, 256, size=(n_train, 28, 28)).astype(np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) * 3 % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.randint(0, 256, size=(n_test, 28, 28)).astype(np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) * 7 % 10).astype(np.uint8),
    }


def write_mnist(raw_dir: Path, arrays: dict[str, np.ndarray], gz: bool = False) -> None:
    for name, arr in arrays.items():
        magic = mnist_mod.IDX_IMAGES_MAGIC if arr.ndim == 3 else mnist_mod.IDX_LABELS_MAGIC
        write_idx(raw_dir / (name + (".gz" if gz else "")), arr, magic)


def write_cifar(root: Path, per_batch: int = 4) -> dict[str, tuple[np.ndarray, list[int]]]:
    """Write cifar-10-batches-py with 5 train batches and a test batch of ``per_batch`` images each."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.RandomState(1)
    written = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data = rng.randint(0, 256, size=(per_batch, 3072)).astype(np.uint8)
        labels = [(i + j) % 10 for j in range(per_batch)]
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"data": data, b"labels": labels}, f)
        written[name] = (data, labels)
    return written


def write_wav(path: Path, samples: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    wavfile.write(path, 16000, samples.astype(np.int16))


def tone(freq_hz: float, n: int = 16000, amp: float = 0.5) -> np.ndarray:
    t = np.arange(n) / 16000.0
    return np.round(amp * 32767 * np.sin(2 * np.pi * freq_hz * t)).astype(np.int16)


# word folder -> list of (file name, number of samples); each file gets its own tone frequency
GSC_FILES = {
    "yes": [("y1.wav", 16000), ("y2.wav", 8000), ("y3.wav", 20000)],
    "no": [("n1.wav", 16000), ("n2.wav", 16000)],
    "go": [("g1.wav", 16000)],
    "bed": [("b1.wav", 16000), ("b2.wav", 12000)],
    "wow": [("w1.wav", 16000), ("w2.wav", 16000)],
}
GSC_TESTING = ["yes/y1.wav", "bed/b1.wav", "wow/w1.wav"]
GSC_VALIDATION = ["no/n2.wav"]


def write_gsc(root: Path) -> Path:
    """Speech Commands v0.02 layout under root/SpeechCommands; returns the speech_commands_v0.02 folder."""
    folder = root / "SpeechCommands" / "speech_commands_v0.02"
    freq = 300.0
    for word, files in GSC_FILES.items():
        for name, n in files:
            write_wav(folder / word / name, tone(freq, n))
            freq += 170.0
    write_wav(folder / "wow" / "zeros.wav", np.zeros(16000, dtype=np.int16))  # pure digital silence
    (folder / "testing_list.txt").write_text("\n".join(GSC_TESTING) + "\n")
    (folder / "validation_list.txt").write_text("\n".join(GSC_VALIDATION) + "\n")
    rng = np.random.RandomState(2)
    for name in ("white_noise.wav", "pink_noise.wav"):
        write_wav(folder / "_background_noise_" / name, rng.randint(-3000, 3000, size=6 * 16000))
    (folder / "README.md").write_text("not a word folder")
    return folder


def features_of(path: Path) -> torch.Tensor:
    wave = gsc.prepare_waveform(gsc.read_wav(path))
    return gsc.MfccFrontEnd()(torch.from_numpy(wave)[None])[0]


def contains_row(x: torch.Tensor, row: torch.Tensor) -> bool:
    return bool((x - row).abs().flatten(1).amax(1).le(1e-5).any())


# ------------------------------------------------------------------------------------------------
# registry and API
# ------------------------------------------------------------------------------------------------


def test_registry_names():
    assert DATASETS == ("mnist_5k", "digits", "mnist", "cifar10", "speech_commands")
    assert DEFAULT_DATASET == "mnist_5k"
    assert tuple(DATASET_SHAPES) == DATASETS


def test_unknown_dataset_lists_choices():
    with pytest.raises(ValueError) as err:
        load_dataset("imagenet")
    for name in DATASETS:
        assert name in str(err.value)
    assert "imagenet" in str(err.value)


# ------------------------------------------------------------------------------------------------
# MNIST (IDX)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_values_and_labels(tmp_path, gz):
    arrays = tiny_mnist()
    write_mnist(tmp_path / "MNIST" / "raw", arrays, gz=gz)
    s = load_dataset("mnist", tmp_path)
    assert isinstance(s, DatasetSplits)
    assert s.train_x.shape == (5, 1, 28, 28) and s.test_x.shape == (3, 1, 28, 28)
    assert s.train_x.dtype == torch.float32 and s.train_y.dtype == torch.int64
    expected = torch.from_numpy(arrays["train-images-idx3-ubyte"].astype(np.float32) / 255.0)
    assert torch.equal(s.train_x[:, 0], expected)
    assert s.train_y.tolist() == [0, 3, 6, 9, 2]
    assert s.test_y.tolist() == [0, 7, 4]
    assert s.test_x[2, 0, 5, 7].item() == pytest.approx(arrays["t10k-images-idx3-ubyte"][2, 5, 7] / 255.0)
    assert s.num_classes == 10 and s.input_shape == (1, 28, 28)
    assert s.class_weights is None and s.augment is None
    assert s.preprocessing["normalize"] is False
    json.dumps(s.preprocessing)


def test_mnist_accepts_mnist_and_raw_folders_and_normalize(tmp_path):
    arrays = tiny_mnist()
    write_mnist(tmp_path / "MNIST" / "raw", arrays, gz=True)
    a = load_dataset("mnist", tmp_path / "MNIST")
    b = load_dataset("mnist", tmp_path / "MNIST" / "raw", normalize=True)
    assert torch.allclose(b.train_x, (a.train_x - 0.1307) / 0.3081)
    assert b.preprocessing["mean"] == [0.1307] and b.preprocessing["std"] == [0.3081]


def test_mnist_env_var_and_max_split(tmp_path, monkeypatch):
    write_mnist(tmp_path / "MNIST" / "raw", tiny_mnist())
    monkeypatch.setenv("WALKING_NOISE_DATA", str(tmp_path))
    s = load_dataset("mnist", max_train=2, max_test=1)
    assert s.train_x.shape[0] == 2 and s.test_y.tolist() == [0]
    assert s.preprocessing["n_train"] == 2
    with pytest.raises(ValueError, match="max_train"):
        load_dataset("mnist", max_train=0)


def test_mnist_bad_magic_and_truncation(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    arrays = tiny_mnist()
    write_mnist(raw, arrays)
    write_idx(raw / "train-labels-idx1-ubyte", arrays["train-labels-idx1-ubyte"], 2051)
    with pytest.raises(ValueError, match="magic"):
        load_dataset("mnist", tmp_path)
    write_mnist(raw, arrays)
    path = raw / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match="truncated"):
        load_dataset("mnist", tmp_path)


def test_mnist_missing_lists_paths(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("mnist", tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte") in msg
    assert "download=True" in msg


def test_augment_rejected_where_undefined(tmp_path):
    with pytest.raises(ValueError, match="augment"):
        load_dataset("mnist_5k", augment=True)


@pytest.mark.skipif(not (SHARED_DATA / "MNIST" / "raw").is_dir(), reason=f"real MNIST not present at {SHARED_DATA}/MNIST/raw")
def test_full_mnist_from_shared():
    s = load_dataset("mnist", SHARED_DATA)
    assert s.train_x.shape == (60000, 1, 28, 28) and s.test_x.shape == (10000, 1, 28, 28)
    assert s.train_y[:5].tolist() == [5, 0, 4, 1, 9]  # the well-known first MNIST labels
    assert float(s.train_x.min()) == 0.0 and float(s.train_x.max()) == 1.0
    assert torch.bincount(s.test_y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# ------------------------------------------------------------------------------------------------
# embedded datasets
# ------------------------------------------------------------------------------------------------


def test_mnist_5k_split():
    s = load_dataset("mnist_5k")
    assert s.name == "mnist_5k" and s.input_shape == (1, 28, 28)
    assert s.train_x.shape == (4000, 1, 28, 28) and s.test_x.shape == (1000, 1, 28, 28)
    assert torch.bincount(s.test_y, minlength=10).tolist() == [100] * 10
    assert torch.bincount(s.train_y, minlength=10).tolist() == [400] * 10
    assert float(s.train_x.min()) == 0.0 and float(s.train_x.max()) == 1.0
    assert len(set(s.train_y[:50].tolist())) > 5  # shuffled: the first N mix classes
    again = load_dataset("mnist_5k", max_train=100, max_test=10)
    assert torch.equal(again.train_x, s.train_x[:100]) and torch.equal(again.test_y, s.test_y[:10])
    # no image appears in both splits (compare by exact pixel bytes)
    train_keys = {bytes(r) for r in (s.train_x.flatten(1) * 255).round().to(torch.uint8).numpy()}
    test_keys = [bytes(r) for r in (s.test_x.flatten(1) * 255).round().to(torch.uint8).numpy()]
    assert not any(k in train_keys for k in test_keys)
    json.dumps(s.preprocessing)


def test_digits():
    pytest.importorskip("sklearn", reason="scikit-learn is not installed")
    s = load_dataset("digits")
    assert s.input_shape == (1, 8, 8)
    assert s.train_x.shape[0] + s.test_x.shape[0] == 1797
    assert abs(s.test_x.shape[0] - 0.2 * 1797) <= 10
    assert float(s.train_x.max()) == 1.0 and float(s.train_x.min()) == 0.0
    counts = torch.bincount(s.test_y, minlength=10)
    assert int(counts.min()) >= 35 and int(counts.max()) <= 37
    assert torch.equal(load_dataset("digits").test_x, s.test_x)


# ------------------------------------------------------------------------------------------------
# CIFAR-10 (pickled batches)
# ------------------------------------------------------------------------------------------------


def test_cifar_normalisation_exact(tmp_path):
    written = write_cifar(tmp_path)
    s = load_dataset("cifar10", tmp_path)
    assert s.train_x.shape == (20, 3, 32, 32) and s.test_x.shape == (4, 3, 32, 32)
    assert DATASET_SHAPES["cifar10"] == (s.input_shape, s.num_classes)
    assert s.train_y.tolist() == sum((written[f"data_batch_{k}"][1] for k in range(1, 6)), [])
    raw = written["data_batch_2"][0][1].reshape(3, 32, 32)  # second image of batch 2 = train index 5
    for c, (m, sd) in enumerate(zip(cifar_mod.CIFAR10_MEAN, cifar_mod.CIFAR10_STD)):
        for h, w in [(0, 0), (7, 19), (31, 31)]:
            expected = (raw[c, h, w] / 255.0 - m) / sd
            assert s.train_x[5, c, h, w].item() == pytest.approx(expected, abs=1e-6)
    plain = load_dataset("cifar10", tmp_path / "cifar-10-batches-py", normalize=False, augment=False)
    assert torch.equal(plain.test_x[0], torch.from_numpy(written["test_batch"][0][0].reshape(3, 32, 32) / np.float32(255)))
    assert plain.augment is None and plain.preprocessing["mean"] is None
    json.dumps(s.preprocessing)


def test_crop_flip_by_hand():
    x = torch.arange(1, 10, dtype=torch.float32).view(1, 1, 3, 3)  # [[1,2,3],[4,5,6],[7,8,9]]
    fill = torch.tensor([-1.0])
    out = cifar_mod.crop_flip(x, torch.tensor([0]), torch.tensor([2]), torch.tensor([True]), 1, fill)
    # padded 5x5 rows 0..2, cols 2..4: [[-1,-1,-1],[2,3,-1],[5,6,-1]]; flipped left-right:
    assert out[0, 0].tolist() == [[-1, -1, -1], [-1, 3, 2], [-1, 6, 5]]
    out = cifar_mod.crop_flip(x, torch.tensor([1]), torch.tensor([1]), torch.tensor([False]), 1, fill)
    assert torch.equal(out, x)


def test_cifar_augment_matches_torchvision_reference(tmp_path):
    tvf = pytest.importorskip("torchvision.transforms.functional")
    write_cifar(tmp_path)
    s = load_dataset("cifar10", tmp_path)
    plain = load_dataset("cifar10", tmp_path, normalize=False, augment=False)
    assert s.augment is not None
    batch = s.train_x[:8]
    out = s.augment(batch, torch.Generator().manual_seed(7))
    assert out.shape == batch.shape and out.dtype == torch.float32
    assert torch.equal(out, s.augment(batch, torch.Generator().manual_seed(7)))
    assert not torch.equal(out, s.augment(batch, torch.Generator().manual_seed(8)))
    # reproduce the documented draws and build the reference with torchvision: pad 0 in [0,1] space,
    # crop, flip, then normalise -- the order torchvision's transform pipeline uses
    g = torch.Generator().manual_seed(7)
    top = torch.randint(0, 9, (8,), generator=g)
    left = torch.randint(0, 9, (8,), generator=g)
    flip = torch.rand(8, generator=g) < 0.5
    for i in range(8):
        img = tvf.pad(plain.train_x[i], [4], fill=0)
        img = tvf.crop(img, int(top[i]), int(left[i]), 32, 32)
        if flip[i]:
            img = tvf.hflip(img)
        ref = tvf.normalize(img, cifar_mod.CIFAR10_MEAN, cifar_mod.CIFAR10_STD)
        assert torch.allclose(out[i], ref, atol=1e-6), i


def test_cifar_missing_lists_paths(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("cifar10", tmp_path)
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_1") in str(err.value)
    assert "CIFAR10" in str(err.value)


# ------------------------------------------------------------------------------------------------
# Speech Commands
# ------------------------------------------------------------------------------------------------


def test_gsc_labels_splits_shapes_weights_cache(tmp_path, monkeypatch):
    folder = write_gsc(tmp_path)
    s = load_dataset("speech_commands", tmp_path)
    assert s.num_classes == 12 and s.input_shape == (1, 49, 10)
    assert DATASET_SHAPES["speech_commands"] == (s.input_shape, s.num_classes)
    assert s.train_x.dtype == torch.float32 and torch.isfinite(s.train_x).all()

    # train: every word clip not in a list (9 of the 13 files) + ceil(0.1*9)=1 silence
    train_words = {"yes": 2, "no": 1, "go": 1, "bed": 1, "wow": 2}  # wow: w2 + zeros.wav
    n_train_words = sum(train_words.values())
    n_sil = math.ceil(0.1 * n_train_words)
    assert s.train_x.shape == (n_train_words + n_sil, 1, 49, 10)
    counts = torch.bincount(s.train_y, minlength=12).tolist()
    assert counts[0] == 2 and counts[1] == 1 and counts[9] == 1  # yes, no, go
    assert counts[10] == n_sil and counts[11] == 3  # silence; unknown = bed + wow(2)
    # test: the testing_list clips + ceil(0.1*3)=1 silence; labels yes->0, bed/wow->11
    assert sorted(s.test_y.tolist()) == [0, 10, 11, 11]

    # split membership by the lists, checked on the features themselves
    assert contains_row(s.test_x, features_of(folder / "yes" / "y1.wav"))
    assert not contains_row(s.train_x, features_of(folder / "yes" / "y1.wav"))
    assert contains_row(s.train_x, features_of(folder / "yes" / "y2.wav"))
    assert not contains_row(s.train_x, features_of(folder / "no" / "n2.wav"))  # validation: unused
    assert not contains_row(s.test_x, features_of(folder / "no" / "n2.wav"))

    # class weights: w = 1 - p, unknown / 3.6, normalised
    p = torch.tensor(counts, dtype=torch.float64) / sum(counts)
    w = 1 - p
    w[11] /= 3.6
    assert s.class_weights.dtype == torch.float32 and s.class_weights.shape == (12,)
    assert torch.allclose(s.class_weights, (w / w.sum()).float())
    json.dumps(s.preprocessing)

    # cache written and reused: a second load must not read any WAV
    caches = list(folder.glob("walking_noise_mfcc_*.pt"))
    assert len(caches) == 1
    monkeypatch.setattr(gsc, "read_wav", lambda p: (_ for _ in ()).throw(AssertionError(f"re-read {p}")))
    again = load_dataset("speech_commands", folder, max_train=3)  # data_dir = the v0.02 folder
    assert torch.equal(again.train_x, s.train_x[:3]) and torch.equal(again.test_x, s.test_x)


def test_gsc_cache_write_failure_is_not_fatal(tmp_path, monkeypatch):
    folder = write_gsc(tmp_path)

    def refuse(*args, **kwargs):
        raise OSError("read-only file system")

    monkeypatch.setattr(gsc.torch, "save", refuse)
    s = load_dataset("speech_commands", tmp_path, normalize=True)
    assert not list(folder.glob("walking_noise_mfcc_*"))
    per_coeff = s.train_x.mean(dim=(0, 1, 2))
    assert torch.allclose(per_coeff, torch.zeros(10), atol=1e-5)
    assert len(s.preprocessing["mean"]) == 10


def test_gsc_rejects_augment_and_reports_missing(tmp_path):
    with pytest.raises(ValueError, match="augment"):
        load_dataset("speech_commands", tmp_path, augment=True)
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("speech_commands", tmp_path)
    assert str(tmp_path / "SpeechCommands" / "speech_commands_v0.02" / "testing_list.txt") in str(err.value)


def test_waveform_pad_trim_and_peak():
    assert gsc.fit_length(np.ones(100, np.float32)).shape == (16000,)
    assert gsc.fit_length(np.arange(20000, dtype=np.float32))[-1] == 15999
    x = gsc.prepare_waveform(np.array([0.0, -0.25, 0.125], np.float32))
    assert x.shape == (16000,) and x[1] == -1.0 and x[2] == 0.5 and x[3:].max() == 0.0
    assert not np.any(gsc.prepare_waveform(np.zeros(16000, np.float32)))


def test_silence_regions_disjoint():
    ramp = np.arange(6 * 16000, dtype=np.float32)  # sample value = its position
    train = gsc.silence_clips([ramp], 20, "train")
    test = gsc.silence_clips([ramp], 20, "test")
    boundary = int(0.8 * ramp.size)
    assert all(c.shape == (16000,) and c[-1] < boundary for c in train)
    assert all(c[0] >= boundary for c in test)
    assert all(np.array_equal(a, b) for a, b in zip(train, gsc.silence_clips([ramp], 20, "train")))
    short = np.ones(20000, np.float32)  # tail < 1 s: whole file used for test
    assert gsc.background_region(short.size, "test") == (0, 20000)


def test_mfcc_matches_numpy_reference_of_tf_ops():
    """Independent float64 re-derivation of the TF ops (stft -> |.| -> mel -> log -> DCT[:10])."""
    from scipy.fft import dct

    wave = gsc.prepare_waveform(tone(1000.0).astype(np.float32) / 32768 + np.linspace(0, 0.1, 16000, dtype=np.float32))
    ours = gsc.MfccFrontEnd()(torch.from_numpy(wave)[None])
    assert ours.shape == (1, 1, 49, 10)

    n = np.arange(480)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / 480)  # periodic Hann
    frames = np.stack([wave[i * 320 : i * 320 + 480].astype(np.float64) * window for i in range(49)])
    mag = np.abs(np.fft.rfft(frames, n=512))

    def mel(f):
        return 1127.0 * math.log(1.0 + f / 700.0)

    edges = np.linspace(mel(20.0), mel(4000.0), 42)
    weights = np.zeros((257, 40))
    for k in range(1, 257):
        m = mel(k * 8000.0 / 256)
        for j in range(40):
            lo, c, hi = edges[j], edges[j + 1], edges[j + 2]
            if lo < m <= c:
                weights[k, j] = (m - lo) / (c - lo)
            elif c < m < hi:
                weights[k, j] = (hi - m) / (hi - c)
    log_mel = np.log(mag @ weights + 1e-6)
    ref = dct(log_mel, type=2, axis=-1, norm=None)[:, :10] / math.sqrt(2 * 40)
    exact = gsc.MfccFrontEnd(dtype=torch.float64)(torch.from_numpy(wave).double()[None])
    assert np.allclose(exact[0, 0].numpy(), ref, atol=1e-9, rtol=0)  # same formulas
    assert np.allclose(ours[0, 0].numpy(), ref, atol=2e-2, rtol=0)  # float32 rounding only


def test_dct_scaling_vs_orthonormal():
    torchaudio_f = pytest.importorskip("torchaudio.functional")
    ortho = torchaudio_f.create_dct(10, 40, norm="ortho")
    expected = ortho.clone()
    expected[:, 0] *= math.sqrt(2.0)
    assert torch.allclose(gsc.mfcc_dct_matrix(), expected, atol=1e-6)
