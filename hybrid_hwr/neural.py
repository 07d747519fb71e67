"""A reference neural recogniser: a small CRNN trained with CTC, decoded by our own search.

Its place in the project is that of a yardstick: the same split files and line images
as the HMM systems, and its outputs go through ``hybrid-hwr decode --emissions ... --ctc``
(:mod:`hybrid_hwr.ctc`), so that greedy decoding, lexicon + word LM and character LM are
the same search, lexicon and LMs for the CRNN and the HMMs.

Network (``CrnnConfig``), for an input of height ``H`` (ink in [0, 1], 1 = ink) and width ``W``::

    4 conv blocks  3x3 conv (channels 16, 32, 48, 64) + batch norm + ReLU + max-pool
                   pools 2x2, 2x2, 2x1, 2x1: H/16 rows and W/4 frames remain
    frames         the rows x channels of each column, stacked (64 H/16 values), dropout
    2-layer BLSTM  ``hidden`` units each way, dropout between the layers (packed sequences:
                   a line's padding in a batch never reaches its outputs)
    linear         to the alphabet + the blank (column 0), log-softmax

Input: the line image resized to ``height`` rows (aspect ratio kept), or with
``preprocess`` the project's normalised line (contrast, deskew, deslant, crop, three zones
to 72 rows; :func:`hybrid_hwr.preprocess.preprocess`) resized to ``height``.

Training (:func:`train_crnn`): Adam on the CTC loss (mean over the batch of the loss per
target character), batches of lines of similar widths in a seeded random order, gradient
norm clipped. After every epoch the greedy (best-path) CER on the validation lines decides:
the best epoch's weights are kept, the learning rate is halved after ``halve_after``
epochs without improvement, and training stops after ``patience`` of them (or
``max_epochs``, or ``max_seconds``). A seed gives the same run on the CPU (one thread by
default; torch's own seed is set per epoch, so ``resume`` continues the same run).

Model folder: ``crnn.pt`` (best weights, config, alphabet; loaded with
``weights_only=True``, no pickle), ``checkpoint.pt`` (the last epoch, for ``resume``),
``crnn.json`` (config, history, parameter count, times) and ``alphabet.txt`` (the
``--ctc`` alphabet file: the blank first, then one character a line, ``<space>`` for the
space). :func:`write_logits` writes, for every line, the ``(frames, C)`` float32
log-probabilities that ``decode --emissions FILE --ctc DIR/alphabet.txt`` reads.

PyTorch is an optional dependency (``pip install 'hybrid_hwr[neural]'``): without it the
functions here raise one :class:`HwrError` naming that command.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import HwrError
from .fileio import atomic_path, atomic_write_text

MODEL_FILE = "crnn.pt"
CHECKPOINT_FILE = "checkpoint.pt"
INFO_FILE = "crnn.json"
ALPHABET_FILE = "alphabet.txt"
BLANK_LINE = "<blank>"
SPACE_LINE = "<space>"
WIDTH_FACTOR = 4      # input columns per output frame (the two 2x2 pools)
INSTALL_HINT = "pip install 'hybrid_hwr[neural]'"


def require_torch():
    """The torch module, or one HwrError naming the install command."""
    try:
        import torch
    except ImportError:
        raise HwrError(f"the CRNN needs PyTorch, which is not installed: {INSTALL_HINT}") from None
    return torch


@dataclasses.dataclass(frozen=True)
class CrnnConfig:
    """Input and network shape, saved with the model."""

    height: int = 32                       # input rows (a multiple of 16)
    preprocess: bool = False               # feed the normalised line instead of the plain image
    channels: tuple = (16, 32, 48, 64)     # of the four conv blocks
    hidden: int = 128                      # BLSTM units per direction
    layers: int = 2
    dropout: float = 0.2

    def check(self) -> None:
        if self.height < 16 or self.height % 16:
            raise HwrError(f"--height must be a multiple of 16 (the pools halve it four times), got {self.height}")
        if len(self.channels) != 4 or min(self.channels) < 1:
            raise HwrError(f"channels: four positive sizes needed, got {self.channels}")
        if self.hidden < 1 or self.layers < 1:
            raise HwrError("hidden units and layers must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise HwrError(f"--dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CrnnConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(d, dict) or set(d) - known:
            raise HwrError(f"CRNN config: unexpected fields {sorted(set(d) - known) if isinstance(d, dict) else d}")
        d = dict(d)
        if "channels" in d:
            d["channels"] = tuple(int(c) for c in d["channels"])
        config = cls(**d)
        config.check()
        return config


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings (not needed to use a trained model)."""

    max_epochs: int = 60
    batch_size: int = 8
    learning_rate: float = 1e-3
    halve_after: int = 2          # epochs without a better validation CER before the rate is halved
    patience: int = 5             # ... before training stops
    clip_norm: float = 5.0
    seed: int = 0
    threads: int = 1
    max_seconds: float | None = None
    device: str | None = None     # None: "cuda" when available, else "cpu"


# ---------------------------------------------------------------------------------------
# Alphabet file


def alphabet_lines(chars: Sequence[str]) -> list[str]:
    """Lines of the ``--ctc`` alphabet file of a network whose column 0 is the blank."""
    return [BLANK_LINE] + [SPACE_LINE if c == " " else c for c in chars]


def write_alphabet(path, chars: Sequence[str]) -> None:
    atomic_write_text(path, "\n".join(alphabet_lines(chars)) + "\n")


# ---------------------------------------------------------------------------------------
# Input images


def line_input(gray: np.ndarray, config: CrnnConfig) -> np.ndarray:
    """The network input of one gray line image: uint8 ink (0 paper .. 255 ink), ``config.height`` rows."""
    from PIL import Image

    if config.preprocess:
        from .preprocess import preprocess

        ink = np.clip(np.ascontiguousarray(preprocess(gray).ink), 0.0, 1.0)
    else:
        ink = 1.0 - np.asarray(gray, dtype=np.float32) / 255.0
    h, w = ink.shape
    width = max(WIDTH_FACTOR, int(round(w * config.height / max(h, 1))))
    image = Image.fromarray(np.rint(ink * 255).astype(np.uint8), mode="L")
    return np.asarray(image.resize((width, config.height), Image.BILINEAR), dtype=np.uint8)


def load_inputs(lines, config: CrnnConfig, jobs: int = 1, desc: str = "images"):
    """``(lines, inputs)`` of the lines whose image loads (the others reported and skipped)."""
    from .batch import map_line_images

    kept, inputs = [], []
    for line, x in map_line_images(lines, functools.partial(line_input, config=config), jobs, "CRNN input", desc):
        kept.append(line)
        inputs.append(x)
    return kept, inputs


def _batch_tensor(torch, inputs: Sequence[np.ndarray]):
    """(B, 1, H, W_max) float tensor of uint8 inputs padded with paper, and their frame counts."""
    width = max(x.shape[1] for x in inputs)
    batch = np.zeros((len(inputs), 1, inputs[0].shape[0], width), dtype=np.float32)
    for i, x in enumerate(inputs):
        batch[i, 0, :, :x.shape[1]] = x / 255.0
    frames = [x.shape[1] // WIDTH_FACTOR for x in inputs]
    return torch.from_numpy(batch), frames


# ---------------------------------------------------------------------------------------
# The network


@functools.lru_cache(maxsize=1)
def _network_class():
    torch = require_torch()
    nn = torch.nn

    class Crnn(nn.Module):
        def __init__(self, config: CrnnConfig, n_outputs: int):
            super().__init__()
            blocks, previous = [], 1
            for channels, pool in zip(config.channels, ((2, 2), (2, 2), (2, 1), (2, 1))):
                blocks += [nn.Conv2d(previous, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                           nn.ReLU(inplace=True), nn.MaxPool2d(pool)]
                previous = channels
            self.conv = nn.Sequential(*blocks)
            self.dropout = nn.Dropout(config.dropout)
            self.lstm = nn.LSTM(previous * (config.height // 16), config.hidden, num_layers=config.layers,
                                bidirectional=True, dropout=config.dropout if config.layers > 1 else 0.0)
            self.output = nn.Linear(2 * config.hidden, n_outputs)

        def forward(self, x, frames):
            """(T, B, C) log-probabilities of a (B, 1, H, W) batch; ``frames``: each line's T."""
            y = self.conv(x)                                   # (B, C, H/16, W/4)
            b, c, h, t = y.shape
            y = self.dropout(y.permute(3, 0, 1, 2).reshape(t, b, c * h))
            # padded, not packed: on the CPU a packed LSTM's backward pass is several times slower
            # (batches hold lines of similar widths, and inference runs line by line: no padding)
            y, _ = self.lstm(y)
            return torch.log_softmax(self.output(self.dropout(y)), dim=2)

    return Crnn


def build_network(config: CrnnConfig, n_outputs: int):
    return _network_class()(config, n_outputs)


def count_parameters(network) -> int:
    return int(sum(p.numel() for p in network.parameters()))


def greedy_decode(log_probs: np.ndarray, chars: Sequence[str]) -> str:
    """Best-path text of one line's ``(T, C)`` outputs: argmax per frame, repeats merged, blanks removed."""
    best = np.argmax(log_probs, axis=1)
    keep = np.ones(len(best), dtype=bool)
    keep[1:] = best[1:] != best[:-1]
    return "".join(chars[i - 1] for i in best[keep] if i != 0)


def needed_frames(ids: np.ndarray) -> int:
    """Fewest CTC frames that can hold a label sequence (a blank between equal neighbours)."""
    return int(len(ids) + np.count_nonzero(ids[1:] == ids[:-1]))


# ---------------------------------------------------------------------------------------
# A trained model


class CrnnModel:
    """A trained CRNN: ``config``, ``chars`` (output columns 1..C-1) and the network."""

    def __init__(self, config: CrnnConfig, chars: Sequence[str], network=None, device: str = "cpu"):
        self.config = config
        self.chars = list(chars)
        self.device = device
        self.network = network if network is not None else build_network(config, len(self.chars) + 1)
        self.network.to(device)

    @property
    def n_outputs(self) -> int:
        return len(self.chars) + 1

    def state(self) -> dict:
        return {"format": "hybrid_hwr.crnn/1", "config": self.config.to_dict(), "chars": self.chars,
                "weights": {k: v.detach().cpu() for k, v in self.network.state_dict().items()}}

    def save(self, directory) -> None:
        torch = require_torch()
        directory = Path(directory)
        with atomic_path(directory / MODEL_FILE) as tmp:
            torch.save(self.state(), tmp)
        write_alphabet(directory / ALPHABET_FILE, self.chars)

    @classmethod
    def from_state(cls, state, device: str = "cpu", where: str = "CRNN model") -> "CrnnModel":
        if not isinstance(state, dict) or state.get("format") != "hybrid_hwr.crnn/1":
            raise HwrError(f"{where}: not a hybrid_hwr CRNN model")
        try:
            model = cls(CrnnConfig.from_dict(state["config"]), [str(c) for c in state["chars"]], device=device)
            model.network.load_state_dict(state["weights"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise HwrError(f"{where}: corrupt CRNN model ({' '.join(str(exc).split())[:200]})") from None
        return model

    def log_probs(self, inputs: Sequence[np.ndarray], batch_size: int = 1) -> list[np.ndarray]:
        """(frames, C) float32 log-probabilities of each input (from :func:`line_input`); one line at a
        time by default, so that no padding changes a line's outputs."""
        torch = require_torch()
        self.network.eval()
        order = sorted(range(len(inputs)), key=lambda i: inputs[i].shape[1])
        out: list = [None] * len(inputs)
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                chunk = order[start:start + batch_size]
                x, frames = _batch_tensor(torch, [inputs[i] for i in chunk])
                y = self.network(x.to(self.device), frames).cpu().numpy()
                for j, i in enumerate(chunk):
                    out[i] = np.ascontiguousarray(y[:frames[j], j], dtype=np.float32)
        return out


def _device(name: str | None) -> str:
    torch = require_torch()
    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise HwrError(f"--device {name}: no CUDA device is available to PyTorch")
    return name


def _load_torch_file(path: Path, what: str):
    torch = require_torch()
    if not path.is_file():
        raise HwrError(f"{path}: no such file ({what})")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:    # torch raises many kinds for a damaged or foreign file
        raise HwrError(f"{path}: cannot read the {what} ({type(exc).__name__}: "
                       f"{' '.join(str(exc).split())[:160]})") from None


def load_crnn(directory, device: str | None = None) -> CrnnModel:
    """The trained model of a folder written by :func:`train_crnn`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise HwrError(f"{directory}: no such CRNN model folder")
    path = directory / MODEL_FILE
    return CrnnModel.from_state(_load_torch_file(path, "CRNN model"), _device(device), str(path))


# ---------------------------------------------------------------------------------------
# Training


def _greedy_cer(model: CrnnModel, inputs, texts) -> tuple[float, list[str]]:
    from .metrics import score_corpus

    hyps = [greedy_decode(y, model.chars) for y in model.log_probs(inputs)]
    refs = [(str(i), t) for i, t in enumerate(texts)]
    return score_corpus(refs, {str(i): h for i, h in enumerate(hyps)}, None).cer, hyps


def _batches(widths: Sequence[int], batch_size: int, rng: np.random.Generator) -> list[list[int]]:
    """Indices in batches of similar widths (less padding), the batches in random order."""
    order = np.argsort(np.asarray(widths) + rng.uniform(0, 1, len(widths)), kind="stable")  # ties broken at random
    batches = [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def train_crnn(train_lines, valid_lines, output, config: CrnnConfig = CrnnConfig(),
               settings: TrainSettings = TrainSettings(), resume: bool = False, jobs: int = 1,
               log: Callable[[str], None] = print) -> CrnnModel:
    """Train on ``train_lines``, select on ``valid_lines`` (greedy CER); writes the model folder."""
    torch = require_torch()
    from .data import Alphabet

    config.check()
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    device = _device(settings.device)
    torch.set_num_threads(settings.threads)
    checkpoint = None
    if resume and (output / CHECKPOINT_FILE).is_file():
        checkpoint = _load_torch_file(output / CHECKPOINT_FILE, "CRNN checkpoint")
        try:
            saved = CrnnConfig.from_dict(checkpoint["model"]["config"])
        except (KeyError, TypeError):
            raise HwrError(f"{output / CHECKPOINT_FILE}: corrupt CRNN checkpoint") from None
        if saved != config:
            log(f"resuming with the checkpoint's network settings ({saved})")
            config = saved

    train_lines, train_inputs = load_inputs(train_lines, config, jobs, "train images")
    valid_lines, valid_inputs = load_inputs(valid_lines, config, jobs, "valid images")
    if not train_inputs:
        raise HwrError("no training line could be read")
    if not valid_inputs:
        raise HwrError("no validation line could be read")
    alphabet = Alphabet(checkpoint["model"]["chars"]) if checkpoint else Alphabet.from_texts(l.text for l in train_lines)
    if len(alphabet) == 0:
        raise HwrError("the training transcriptions hold no character")
    # column 0 is the blank, so the ids of the loss are the alphabet's + 1
    targets, keep = [], []
    for i, (line, x) in enumerate(zip(train_lines, train_inputs)):
        ids = alphabet.encode(line.text) + 1
        if len(ids) and needed_frames(ids) <= x.shape[1] // WIDTH_FACTOR:
            targets.append(ids)
            keep.append(i)
    dropped = len(train_inputs) - len(keep)
    train_inputs = [train_inputs[i] for i in keep]
    if not train_inputs:
        raise HwrError("no training line is long enough for its transcription (or all are empty)")
    log(f"{len(train_inputs)} training lines ({dropped} dropped: empty or too narrow for their text), "
        f"{len(valid_inputs)} validation lines, {len(alphabet)} characters + blank, device {device}")

    torch.manual_seed(settings.seed)
    model = CrnnModel(config, alphabet.symbols, device=device)
    optimiser = torch.optim.Adam(model.network.parameters(), lr=settings.learning_rate)
    history, best_cer, best_weights, stale, epoch, elapsed = [], math.inf, None, 0, 0, 0.0
    if checkpoint is not None:
        try:
            model.network.load_state_dict(checkpoint["model"]["weights"])
            optimiser.load_state_dict(checkpoint["optimiser"])
            history, best_cer, stale = list(checkpoint["history"]), float(checkpoint["best_cer"]), int(checkpoint["stale"])
            best_weights, epoch, elapsed = checkpoint["best_weights"], len(history), float(checkpoint["seconds"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise HwrError(f"{output / CHECKPOINT_FILE}: corrupt CRNN checkpoint ({exc})") from None
        log(f"resumed after epoch {epoch} (best validation CER {100 * best_cer:.2f} %)")
    n_params = count_parameters(model.network)
    log(f"CRNN {config.to_dict()}: {n_params:,} parameters")
    ctc = torch.nn.CTCLoss(blank=0, reduction="mean", zero_infinity=True)
    widths = [x.shape[1] for x in train_inputs]
    valid_texts = [line.text for line in valid_lines]
    start = time.time() - elapsed
    while epoch < settings.max_epochs and stale < settings.patience:
        if settings.max_seconds is not None and time.time() - start >= settings.max_seconds:
            log(f"time budget of {settings.max_seconds:.0f} s used up")
            break
        epoch += 1
        epoch_start, cpu_start = time.time(), time.process_time()
        torch.manual_seed(settings.seed * 100003 + epoch)       # dropout masks: the same on a resumed run
        rng = np.random.default_rng([settings.seed, epoch])
        model.network.train()
        total, count = 0.0, 0
        for batch in _batches(widths, settings.batch_size, rng):
            x, frames = _batch_tensor(torch, [train_inputs[i] for i in batch])
            y = model.network(x.to(device), frames)
            labels = torch.from_numpy(np.concatenate([targets[i] for i in batch]).astype(np.int64))
            label_lengths = torch.as_tensor([len(targets[i]) for i in batch], dtype=torch.int64)
            loss = ctc(y, labels, torch.as_tensor(frames, dtype=torch.int64), label_lengths)
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.network.parameters(), settings.clip_norm)
            optimiser.step()
            total += loss.item() * len(batch)
            count += len(batch)
        cer, _ = _greedy_cer(model, valid_inputs, valid_texts)
        rate = optimiser.param_groups[0]["lr"]
        improved = cer < best_cer
        if improved:
            best_cer, stale = cer, 0
            best_weights = {k: v.detach().cpu().clone() for k, v in model.network.state_dict().items()}
            model.save(output)
        else:
            stale += 1
            if stale % settings.halve_after == 0:
                for group in optimiser.param_groups:
                    group["lr"] = rate / 2
        record = {"epoch": epoch, "train_loss": total / max(count, 1), "valid_cer": cer, "learning_rate": rate,
                  "seconds": time.time() - epoch_start, "cpu_seconds": time.process_time() - cpu_start}
        history.append(record)
        log(f"epoch {epoch:3d}  train loss {record['train_loss']:.4f}  valid greedy CER {100 * cer:6.2f} %"
            f"{'  (best)' if improved else ''}  lr {rate:.2g}  {record['seconds']:.0f} s")
        _save_checkpoint(output, model, optimiser, history, best_cer, best_weights, stale, time.time() - start)
        _write_info(output, config, settings, history, n_params, len(train_inputs), len(valid_inputs))
    if best_weights is None:
        raise HwrError("training stopped before the first epoch finished; no model written")
    model.network.load_state_dict(best_weights)
    model.save(output)
    best = min(history, key=lambda r: r["valid_cer"])
    log(f"best validation greedy CER {100 * best['valid_cer']:.2f} % at epoch {best['epoch']} "
        f"({len(history)} epochs, {time.time() - start:.0f} s); model written to {output}")
    return model


def _save_checkpoint(output, model, optimiser, history, best_cer, best_weights, stale, seconds) -> None:
    torch = require_torch()
    state = {"model": model.state(), "optimiser": optimiser.state_dict(), "history": history,
             "best_cer": best_cer, "best_weights": best_weights, "stale": stale, "seconds": seconds}
    with atomic_path(Path(output) / CHECKPOINT_FILE) as tmp:
        torch.save(state, tmp)


def _write_info(output, config, settings, history, n_params, n_train, n_valid) -> None:
    best = min(history, key=lambda r: r["valid_cer"])
    info = {"config": config.to_dict(), "training": dataclasses.asdict(settings), "parameters": n_params,
            "train_lines": n_train, "valid_lines": n_valid, "best_epoch": best["epoch"],
            "best_valid_cer": best["valid_cer"], "seconds": sum(r["seconds"] for r in history),
            "cpu_seconds": sum(r["cpu_seconds"] for r in history), "history": history}
    atomic_write_text(Path(output) / INFO_FILE, json.dumps(info, indent=1) + "\n")


# ---------------------------------------------------------------------------------------
# Outputs for the CTC decoder


def write_logits(model_dir, lines, output, jobs: int = 1, device: str | None = None, greedy=None,
                 log: Callable[[str], None] = print) -> int:
    """Per-frame log-probabilities of every readable line into ``output`` (.npz, one array per id);
    (re)writes ``model_dir/alphabet.txt``; ``greedy``: also write each line's best-path text
    there (``id<TAB>text``, what ``decode --ctc`` gives without lexicon, LM and character
    penalty). Returns the number of lines written."""
    from .cli import AtomicNpzWriter

    model = load_crnn(model_dir, device)
    write_alphabet(Path(model_dir) / ALPHABET_FILE, model.chars)
    lines, inputs = load_inputs(lines, model.config, jobs, "images")
    if not inputs:
        raise HwrError(f"no line could be read; {output} not written")
    texts = []
    with AtomicNpzWriter(output) as writer:
        for line, y in zip(lines, model.log_probs(inputs)):
            writer.add(line.id, y)
            texts.append(f"{line.id}\t{' '.join(greedy_decode(y, model.chars).split())}\n")
    if greedy is not None:
        atomic_write_text(greedy, "".join(texts))
    log(f"wrote the CTC outputs ({model.n_outputs} columns, log-probabilities) of {len(inputs)} lines to {output}; "
        f"alphabet {Path(model_dir) / ALPHABET_FILE}")
    return len(inputs)
