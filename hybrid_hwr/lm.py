"""KenLM n-gram language models: building them with ``lmplz``, loading and scoring them.

Building: ``build_lm`` tokenises the corpora with ``hybrid_hwr.text`` (the same tokens the
lexicon and the WER use), writes them to a temporary file and runs KenLM's ``lmplz``
(modified Kneser-Ney) and, for binary output, ``build_binary``. Both programs are built
from the ``kenlm`` source package by ``make install`` (``hybrid_hwr/scripts/build_kenlm.sh``) into the
virtual environment's ``bin``; ``find_kenlm_binary`` locates them.

Scoring goes through the ``kenlm`` Python module. KenLM gives log10 probabilities; every
score this module returns is a natural log (``ln p = log10 p * ln 10``), the unit of the
optical model's log-likelihoods.

For a decoder, ``LmScorer`` numbers the LM states it meets (``kenlm.State`` -> int) and
caches ``(state id, token id) -> (ln p(token | state), next state id)``, so that word-end
transitions cost one dictionary look-up after the first time.

Character LMs are word LMs whose tokens are characters (``text.char_tokens``: ``<sp>``
stands for the space between words); build them with ``unit='char'``.
"""

from __future__ import annotations

import bz2
import contextlib
import fcntl
import gzip
import lzma
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from .errors import HwrError
from .fileio import atomic_path, glob_escape, remove_stale_temporaries
from .text import SPACE_TOKEN, char_tokens, tokenize

LN10 = math.log(10.0)
UNK = "<unk>"
UNK_ID = -1  # token id that ``LmScorer`` scores as KenLM's <unk>
KENLM_MAX_ORDER = 6  # the kenlm Python module and hybrid_hwr/scripts/build_kenlm.sh are built with it
_ENV_KENLM_DIR = "HYBRID_HWR_KENLM_BIN"
_RESERVED = frozenset({"<s>", "</s>", UNK})


# --------------------------------------------------------------------------- binaries

def find_kenlm_binary(name: str = "lmplz") -> Path:
    """Path of a KenLM program (``lmplz`` or ``build_binary``).

    Looked up in ``$HYBRID_HWR_KENLM_BIN``, then next to the running Python (the
    virtual environment's ``bin``, where ``make install`` puts it), then on ``PATH``.
    """
    candidates = []
    if os.environ.get(_ENV_KENLM_DIR):
        candidates.append(Path(os.environ[_ENV_KENLM_DIR]) / name)
    candidates.append(Path(sys.executable).parent / name)
    on_path = shutil.which(name)
    if on_path:
        candidates.append(Path(on_path))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    script = Path(__file__).resolve().parent / "scripts" / "build_kenlm.sh"
    raise HwrError(f"KenLM's {name} not found: build it with `bash {script} {sys.prefix}` (about a minute; "
                   f"`make install` does it in a checkout), or set {_ENV_KENLM_DIR} to the folder that holds it")


# --------------------------------------------------------------------------- corpora

def read_text_lines(path: str | os.PathLike) -> Iterator[str]:
    """Lines of a UTF-8 text corpus, plain or compressed (.xz, .gz, .bz2).

    A ``.tsv`` split file (``id<TAB>text``) yields its text column, so a recipe can add
    training transcriptions to an LM.
    """
    path = Path(path)
    if not path.is_file():
        raise HwrError(f"{path}: no such corpus file")
    compressed = {".xz": lzma.open, ".gz": gzip.open, ".bz2": bz2.open}
    opener = compressed.get(path.suffix, open)
    plain_name = path.stem if path.suffix in compressed else path.name
    is_tsv = plain_name.endswith(".tsv")
    try:
        with opener(path, "rb") as handle:
            # decoded line by line so that an encoding error names its line
            for lineno, raw in enumerate(handle, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise HwrError(f"{path}:{lineno}: not UTF-8 text ({exc.reason})") from None
                if is_tsv:
                    _, _, line = line.partition("\t")
                yield line.rstrip("\r\n")
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise HwrError(f"{path}: cannot read corpus ({exc})") from None


def lm_tokens(text: str, lang: str = "en", unit: str = "word") -> list[str]:
    """The tokens an LM of ``unit`` 'word' or 'char' sees for one line of text."""
    if unit == "word":
        return tokenize(text, lang)
    if unit == "char":
        return char_tokens(text, lang)
    raise ValueError(f"unit must be 'word' or 'char', not {unit!r}")


def write_lm_text(corpus_paths: Iterable[str | os.PathLike], out, lang: str = "en",
                  unit: str = "word") -> int:
    """Write the tokenised corpora to the text stream ``out``, one line a line.

    Returns the number of tokens written. KenLM's reserved words (<s>, </s>, <unk>) are
    dropped from the text.
    """
    n_tokens = 0
    for path in corpus_paths:
        for line in read_text_lines(path):
            tokens = [t for t in lm_tokens(line, lang, unit) if t not in _RESERVED]
            if tokens:
                out.write(" ".join(tokens))
                out.write("\n")
                n_tokens += len(tokens)
    return n_tokens


# --------------------------------------------------------------------------- building

def _run(command: list[str], what: str, stdin=None) -> str:
    """Run a KenLM program; its stderr in an HwrError when it fails, else returned."""
    proc = subprocess.run(command, stdin=stdin, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, errors="replace")
    if proc.returncode != 0:
        raise HwrError(f"{what} failed: {_kenlm_reason(proc.stderr, proc.returncode)}")
    return proc.stderr


def _kenlm_reason(stderr: str, returncode: int) -> str:
    """The human part of a KenLM error: the line after '... threw XException because ...'."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for i in range(len(lines) - 1, -1, -1):
        if " threw " in lines[i]:
            if i + 1 < len(lines):
                return lines[i + 1]
            return lines[i].split(" threw ", 1)[1]
    errors = [ln for ln in lines if "rror" in ln]
    return (errors or lines or [f"exit code {returncode}"])[-1]


def _discount_failed(error: HwrError) -> bool:
    return "discount" in str(error).lower()


def build_lm(corpus_paths: Sequence[str | os.PathLike], order: int,
             out_path: str | os.PathLike, *, lang: str = "en", unit: str = "word",
             vocab: str | os.PathLike | Iterable[str] | None = None,
             prune: Sequence[int] | None = None, memory: str = "2G",
             discount_fallback: bool | None = None, temp_dir: str | None = None,
             binary_path: str | os.PathLike | None = None) -> Path:
    """Build an ``order``-gram KenLM model of the tokenised corpora; returns ``out_path``.

    corpus_paths: text files (plain, .xz, .gz, .bz2; .tsv split files give their text).
    out_path: ``.arpa.gz`` (gzip ARPA), ``.arpa``, or ``.binary``/``.klm`` (KenLM trie).
    lang, unit: tokenisation (``text.tokenize``) and 'word' or 'char' tokens.
    vocab: a lexicon file or a list of tokens; n-grams holding other tokens are
        dropped (lmplz ``--limit_vocab_file``), so the LM's vocabulary is the lexicon's.
    prune: count thresholds per order, e.g. ``(0, 1, 1)`` drops bigrams and trigrams
        seen once (lmplz ``--prune``).
    memory: lmplz ``-S`` (e.g. '2G' or '20%').
    discount_fallback: None retries with lmplz ``--discount_fallback`` when the
        Kneser-Ney discounts cannot be estimated (tiny corpora); True/False force it.
    binary_path: also write a KenLM trie binary there.
    """
    if not 2 <= order <= KENLM_MAX_ORDER:   # KenLM's query code (the decoder's) reads bigrams and up only
        raise HwrError(f"LM order must be between 2 and {KENLM_MAX_ORDER}, not {order} "
                       "(KenLM cannot load a unigram model)")
    if prune is not None:
        prune = [int(p) for p in prune]
        if len(prune) > order or any(p < 0 for p in prune) or prune != sorted(prune):
            raise HwrError(f"--prune takes at most {order} non-decreasing counts, not {prune}")
    out_path = Path(out_path)
    name = out_path.name
    if not (name.endswith((".arpa", ".arpa.gz", ".binary", ".klm"))):
        raise HwrError(f"{out_path}: LM output must end in .arpa.gz, .arpa, .binary or .klm")
    corpus_paths = list(corpus_paths)
    if not corpus_paths:
        raise HwrError("no corpus given to build the LM from")
    lmplz = find_kenlm_binary("lmplz")
    out_path.parent.mkdir(parents=True, exist_ok=True)

    with _locked_work_dir(temp_dir) as work:
        text_path = work / "corpus.txt"
        with open(text_path, "w", encoding="utf-8") as out:
            n_tokens = write_lm_text(corpus_paths, out, lang, unit)
        if n_tokens == 0:
            raise HwrError(f"no text in {', '.join(map(str, corpus_paths))}")
        command = [str(lmplz), "-o", str(order), "-S", memory, "-T", str(work),
                   "--text", str(text_path), "--arpa", str(work / "lm.arpa")]
        if vocab is not None:
            vocab_path = work / "vocab.txt"
            words = _read_vocab(vocab) if isinstance(vocab, (str, os.PathLike)) else list(vocab)
            vocab_path.write_text("\n".join(words) + "\n", encoding="utf-8")
            command += ["--limit_vocab_file", str(vocab_path)]
        if prune:
            command += ["--prune", *map(str, prune)]
        if discount_fallback:
            command.append("--discount_fallback")
        try:
            _run(command, "lmplz")
        except HwrError as exc:
            if discount_fallback is not None or not _discount_failed(exc):
                raise
            _run(command + ["--discount_fallback"], "lmplz")

        arpa = work / "lm.arpa"
        # interrupted or full-disk writes leave no half LM; a killed build's temporary is removed by the next
        remove_stale_temporaries(out_path.parent, (glob_escape(out_path.name) + ".part",))   # older builds' name
        with atomic_path(out_path) as partial:
            if name.endswith(".arpa.gz"):
                with open(arpa, "rb") as src, gzip.open(partial, "wb", compresslevel=9) as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            elif name.endswith(".arpa"):
                shutil.move(arpa, partial)
            else:
                arpa_to_binary(arpa, partial)
        if binary_path is not None:
            source = out_path if name.endswith((".arpa", ".arpa.gz")) else None
            if source is None:
                with atomic_path(binary_path) as tmp:
                    shutil.copyfile(out_path, tmp)
            else:
                arpa_to_binary(source, binary_path)
    return out_path


_WORK_PREFIX = "hwr-lm-"


def remove_abandoned_work_dirs(temp_dir: str | None = None) -> int:
    """Remove the work folders (tokenised corpus, lmplz's temporaries: often gigabytes) that
    killed builds left in the temporary directory: ours, with a ``.lock`` no live build
    holds. Returns how many were removed."""
    removed = 0
    for work in Path(temp_dir or tempfile.gettempdir()).glob(_WORK_PREFIX + "*"):
        try:
            if work.is_symlink() or not work.is_dir() or work.stat().st_uid != os.getuid():
                continue
            fd = os.open(work / ".lock", os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue   # not ours, gone meanwhile, or a build that is just starting
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue   # a live build
        finally:
            os.close(fd)
        shutil.rmtree(work, ignore_errors=True)
        removed += 1
    return removed


@contextlib.contextmanager
def _locked_work_dir(temp_dir: str | None):
    """A new work folder whose ``.lock`` is held while it is in use, so that
    :func:`remove_abandoned_work_dirs` (run first) tells it from a killed build's."""
    remove_abandoned_work_dirs(temp_dir)
    with tempfile.TemporaryDirectory(prefix=_WORK_PREFIX, dir=temp_dir) as work:
        fd = os.open(Path(work) / ".lock", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield Path(work)
        finally:
            os.close(fd)


def _read_vocab(path: str | os.PathLike) -> list[str]:
    from .lexicon import load_lexicon  # lexicon files are the vocabularies
    return load_lexicon(path)


def arpa_to_binary(arpa_path: str | os.PathLike, binary_path: str | os.PathLike,
                   data_structure: str = "trie") -> Path:
    """KenLM ``build_binary`` (``trie`` is small, ``probing`` is fastest)."""
    if data_structure not in ("trie", "probing"):
        raise HwrError(f"KenLM data structure must be 'trie' or 'probing', not {data_structure!r}")
    binary_path = Path(binary_path)
    with atomic_path(binary_path) as partial:
        _run([str(find_kenlm_binary("build_binary")), "-s", data_structure,
              str(arpa_path), str(partial)], "build_binary")
    return binary_path


# --------------------------------------------------------------------------- loading

@contextlib.contextmanager
def _quiet_stderr():
    """Point file descriptor 2 at /dev/null meanwhile, and restore it even on error.

    KenLM writes its loading notices ("Loading the LM will be faster if you build a
    binary file.", "Reading FILE", a progress bar) from C++ straight to descriptor 2,
    whatever ``sys.stderr`` is (a terminal, a notebook, a test's capture): the
    descriptor itself is redirected, not ``sys.stderr``.
    """
    try:
        sys.stderr.flush()   # Python text written before stays in order
    except (AttributeError, OSError, ValueError):
        pass
    try:
        saved = os.dup(2)
    except OSError:          # no descriptor 2 at all: nothing to hide
        yield
        return
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, 2)
        finally:
            os.close(null)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def load_lm(path: str | os.PathLike):
    """Load an ARPA (plain or gzip) or binary KenLM model as a ``kenlm.Model``.

    A missing, empty or unreadable file raises HwrError naming it.
    """
    import kenlm

    path = Path(path)
    if not path.is_file():
        raise HwrError(f"{path}: no such language model file")
    if path.stat().st_size == 0:
        raise HwrError(f"{path}: empty language model file")
    config = kenlm.Config()
    config.show_progress = False
    try:
        with _quiet_stderr():
            return kenlm.Model(str(path), config)
    except (OSError, RuntimeError, ValueError) as exc:
        message = str(exc)
        detail = re.search(r"threw \w+\.?\s*(.*)", message, re.S)
        reason = (detail.group(1) if detail else message).strip().rstrip(")").splitlines()
        reason = reason[0] if reason else "unknown format"
        raise HwrError(f"{path}: not a readable KenLM language model ({reason[:160]})") from None


def missing_tokens(model, tokens: Iterable[str]) -> list[str]:
    """Tokens the LM does not know (it would score them as <unk>)."""
    return [t for t in tokens if t not in model]


def check_vocabulary(model, tokens: Sequence[str], lm_name: str, max_missing: float = 0.5) -> int:
    """HwrError when more than ``max_missing`` of ``tokens`` are unknown to the LM.

    An LM built from another language or another tokenisation misses most of the
    lexicon; a few unknown words only fall back to <unk>. Returns the number missing.
    """
    tokens = list(tokens)
    missing = missing_tokens(model, tokens)
    if tokens and len(missing) > max_missing * len(tokens):
        examples = ", ".join(missing[:5])
        raise HwrError(f"{lm_name}: the LM knows only {len(tokens) - len(missing)} of "
                       f"{len(tokens)} lexicon words (missing e.g. {examples})")
    return len(missing)


# --------------------------------------------------------------------------- scoring

def char_lm_symbols(symbols: Sequence[str]) -> list[str]:
    """Alphabet symbols as character-LM tokens (space -> ``<sp>``)."""
    return [SPACE_TOKEN if s == " " else s for s in symbols]


class LmScorer:
    """Natural-log n-gram scores of token ids given LM state ids, cached for a decoder.

    ``tokens[i]`` is the LM token of id ``i`` (lexicon word ids for a word LM,
    ``char_lm_symbols(alphabet)`` for a character LM); ``UNK_ID`` scores <unk>.
    State 0 is the sentence start (after <s>), state 1 the empty context.

        s = scorer.BOS
        for w in word_ids:
            logp, s = scorer.score(s, w)
        total += scorer.end_score(s)        # ln p(</s> | s)
    """

    BOS = 0
    NULL = 1

    def __init__(self, model, tokens: Sequence[str]):
        import kenlm

        self.model = model
        self.tokens = list(tokens)
        self._words = self.tokens + [UNK]
        self._kenlm = kenlm
        self._n = len(self.tokens) + 1  # +1 for UNK_ID
        bos, null = kenlm.State(), kenlm.State()
        model.BeginSentenceWrite(bos)
        model.NullContextWrite(null)
        self._states: list = [bos, null]
        self._state_ids: dict = {bos: 0}
        self._state_ids.setdefault(null, 1)
        self._cache: dict[int, tuple[float, int]] = {}
        self._end_cache: dict[int, float] = {}

    @property
    def n_states(self) -> int:
        return len(self._states)

    def in_vocabulary(self) -> np.ndarray:
        """bool per token id: known to the LM (else scored as <unk>)."""
        return np.array([t in self.model for t in self.tokens], dtype=bool)

    def _state_id(self, state) -> int:
        sid = self._state_ids.get(state)
        if sid is None:
            sid = len(self._states)
            self._state_ids[state] = sid
            self._states.append(state)
        return sid

    def score(self, state_id: int, token_id: int) -> tuple[float, int]:
        """(ln p(token | state), id of the state after it)."""
        if not -1 <= token_id < self._n - 1:
            raise IndexError(f"token id {token_id} out of range")
        key = state_id * self._n + token_id + 1
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        word = UNK if token_id == UNK_ID else self.tokens[token_id]
        out = self._kenlm.State()
        log10p = self.model.BaseScore(self._states[state_id], word, out)
        hit = (log10p * LN10, self._state_id(out))
        self._cache[key] = hit
        return hit

    def score_many(self, state_ids: np.ndarray, token_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised ``score``: (ln p float64 array, next state ids int32 array)."""
        logp = np.empty(len(state_ids), dtype=np.float64)
        nxt = np.empty(len(state_ids), dtype=np.int32)
        for i, (s, w) in enumerate(zip(np.asarray(state_ids).tolist(),
                                       np.asarray(token_ids).tolist())):
            logp[i], nxt[i] = self.score(s, w)
        return logp, nxt

    def score_pairs(self, state_ids: np.ndarray, token_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``score`` of many (state, token) pairs, bypassing the per-pair cache.

        For callers that keep their own table of the results (the decoder's search):
        about half the Python work per pair of ``score``. Returns (ln p float64 array,
        next state ids int64 array).
        """
        states, tokens = np.asarray(state_ids).tolist(), np.asarray(token_ids).tolist()
        if tokens and not (-1 <= min(tokens) and max(tokens) < self._n - 1):
            raise IndexError("token id out of range")
        words = self._words   # index -1 is <unk>
        model, known, new_state = self.model, self._states, self._kenlm.State
        ids_get, state_id = self._state_ids.get, self._state_id
        logp, nxt = [], []
        for s, w in zip(states, tokens):
            out = new_state()
            logp.append(model.BaseScore(known[s], words[w], out))
            sid = ids_get(out)
            nxt.append(sid if sid is not None else state_id(out))
        return np.array(logp, dtype=np.float64) * LN10, np.array(nxt, dtype=np.int64)

    def end_score(self, state_id: int) -> float:
        """ln p(</s> | state)."""
        hit = self._end_cache.get(state_id)
        if hit is None:
            out = self._kenlm.State()
            hit = self.model.BaseScore(self._states[state_id], "</s>", out) * LN10
            self._end_cache[state_id] = hit
        return hit

    def sequence_score(self, token_ids: Sequence[int], bos: bool = True, eos: bool = True) -> float:
        """ln p of a whole token sequence (the sum the decoder accumulates)."""
        state = self.BOS if bos else self.NULL
        total = 0.0
        for t in token_ids:
            logp, state = self.score(state, int(t))
            total += logp
        return total + (self.end_score(state) if eos else 0.0)


# --------------------------------------------------------------------------- evaluation

@dataclass
class LmEvaluation:
    """Perplexity and OOV rate of an LM on some text.

    perplexity: over in-vocabulary tokens and each line's </s>, OOV tokens excluded
        (SRILM's ``ppl``). perplexity_with_oov: every token, OOVs scored as <unk>
        (KenLM's ``perplexity``).
    """

    n_lines: int
    n_tokens: int
    n_oov: int
    oov_rate: float
    perplexity: float
    perplexity_with_oov: float


def evaluate_lm(model, texts: Iterable[str], lang: str = "en", unit: str = "word") -> LmEvaluation:
    """Perplexity and OOV rate of ``model`` on ``texts`` (tokenised like the LM's corpus)."""
    n_lines = n_tokens = n_oov = 0
    log10_in = log10_all = 0.0
    for text in texts:
        tokens = lm_tokens(text, lang, unit)
        if not tokens:
            continue
        n_lines += 1
        n_tokens += len(tokens)
        for log10p, _, oov in model.full_scores(" ".join(tokens)):
            log10_all += log10p
            if oov:
                n_oov += 1
            else:
                log10_in += log10p
    if n_lines == 0:
        raise HwrError("no text to evaluate the language model on")
    n_events = n_tokens + n_lines  # one </s> per line
    return LmEvaluation(
        n_lines=n_lines, n_tokens=n_tokens, n_oov=n_oov, oov_rate=n_oov / n_tokens,
        perplexity=10.0 ** (-log10_in / max(n_events - n_oov, 1)),
        perplexity_with_oov=10.0 ** (-log10_all / n_events))
