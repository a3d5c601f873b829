"""The README's first command: convert the bundled example clips to a bundled target speaker.

    python -m vc.demo --out out [--target NAME|speaker.npy] [--model MODEL_DIR] [--n-iter 32]

Writes out/converted/<clip>__to__<target>.wav, out/source/<clip>.wav (the originals as WAV, for
listening side by side) and out/spectrograms.png (source / converted / the target speaker's own speech).
The examples are made by tools/make_examples.py from held-out test speakers of the open corpus. A real
person is converted too, to every shipped target (or to --target): the channel-test voice of alsa-utils
(/usr/share/sounds/alsa, 48 kHz, resampled), which every set-up of this project installs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from vc.files import save_figure
from vc.settings import DEFAULT_N_ITER

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


class DemoError(RuntimeError):
    pass


def load_manifest(examples: Path) -> dict:
    path = examples / "manifest.json"
    if not path.is_file():
        raise DemoError(f"{path}: missing; run `python tools/make_examples.py` to build the examples")
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def choose_target(arg: str | None, manifest: dict, examples: Path, model_id: str | None = None
                  ) -> tuple[str, Path, Path | None]:
    """-> (name, speaker.npy, the target's own reference clip or None)."""
    speakers = {s["name"]: s for s in manifest.get("targets", [])}
    if arg is None:
        arg = manifest.get("default_target") or (sorted(speakers)[0] if speakers else None)
        if arg is None:
            raise DemoError(f"{examples / 'manifest.json'}: lists no target speakers")
    if arg in speakers:
        entry = speakers[arg]
        reference = examples / entry["reference"] if entry.get("reference") else None
        if not entry.get("speaker"):
            raise DemoError(f"target {arg!r} has no speaker code yet: run `python tools/make_examples.py` "
                            "once the model exists")
        made_for = entry.get("model_id")
        if model_id is not None and made_for is not None and made_for != model_id:
            print(f"warning: target {arg!r} was enrolled with model {made_for!r}, running {model_id!r}; "
                  "rerun tools/make_examples.py", file=sys.stderr)
        return arg, examples / entry["speaker"], reference
    path = Path(arg)
    if path.suffix == ".npy" or path.exists():
        return path.stem, path, None
    raise DemoError(f"unknown target {arg!r}; bundled targets: {', '.join(sorted(speakers)) or 'none'}")


def load_human_clip(manifest: dict, sr: int) -> tuple[str, np.ndarray] | None:
    """The manifest's human recording (spoken files joined with 0.25 s pauses) at sr, or None with a
    note when the system files are missing (alsa-utils not installed)."""
    from vc.audio import read_audio

    spec = manifest.get("human_clip")
    if not spec:
        return None
    paths = [Path(spec["directory"]) / name for name in spec["files"]]
    present = [p for p in paths if p.is_file()]
    if not present:
        print(f"note: {spec['directory']} has none of the alsa-utils voice files; install alsa-utils to "
              "convert a human voice too", file=sys.stderr)
        return None
    pause = np.zeros(int(0.25 * sr), dtype=np.float32)
    parts = []
    for path in present:
        parts += [read_audio(path, sr=sr)[0], pause]
    return spec["name"], np.concatenate(parts[:-1])


def spectrogram_figure(panels, cfg, path: Path) -> bool:
    """panels: [(title, mono audio at cfg.sr)]. Returns False (and says why) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no spectrogram figure (pip install matplotlib)", file=sys.stderr)
        return False
    from vc.dsp import log_magnitude

    db = 20.0 / np.log(10.0)
    specs = []
    for title, audio in panels:
        if audio.size < cfg.n_fft:
            audio = np.pad(audio, (0, cfg.n_fft - audio.size))
        spec = log_magnitude(audio, cfg=cfg).T * db  # dB, (bins, frames)
        # Relative to each panel's peak: the figure compares spectral shape, not loudness.
        specs.append((title, spec - spec.max(), audio.size / cfg.sr))
    lowest = cfg.sr / cfg.n_fft * int(cfg.drop_dc)
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.4 * len(panels)), squeeze=False, layout="constrained")
    image = None
    for ax, (title, spec, seconds) in zip(axes[:, 0], specs):
        image = ax.imshow(spec, origin="lower", aspect="auto", cmap="magma", vmin=-80, vmax=0,
                          extent=(0, seconds, lowest, cfg.sr / 2))
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("Hz")
    axes[-1, 0].set_xlabel("seconds")
    fig.colorbar(image, ax=axes[:, 0].tolist(), label="dB re panel peak", shrink=0.8)
    save_figure(fig, path)
    plt.close(fig)
    return True


def run_demo(out_dir, target=None, model_dir=None, n_iter: int = DEFAULT_N_ITER, device: str = "auto",
             examples: Path = EXAMPLES) -> dict:
    from vc.audio import read_audio, write_wav
    from vc.conversion import convert
    from vc.model import load_model
    from vc.speakers import load_speaker

    out_dir = Path(out_dir)
    model = load_model(model_dir, device=device)
    print(model.describe())
    manifest = load_manifest(examples)
    name, speaker_path, reference = choose_target(target, manifest, examples, model.model_id)
    speaker = load_speaker(speaker_path, model)
    target_speaker = next((t.get("speaker_id") for t in manifest.get("targets", []) if t["name"] == name), None)
    sr = model.feature_config.sr

    clips = [c for c in manifest.get("clips", []) if c.get("speaker") != target_speaker]
    if not clips:
        raise DemoError(f"{examples / 'manifest.json'}: no example clips by speakers other than the target")
    (out_dir / "converted").mkdir(parents=True, exist_ok=True)
    (out_dir / "source").mkdir(parents=True, exist_ok=True)
    print(f"converting {len(clips)} example clip(s) to target '{name}' ({speaker_path})")
    written, first = [], None
    start = time.perf_counter()
    audio_seconds = 0.0
    for clip in clips:
        src = examples / clip["path"]
        audio, _ = read_audio(src, sr=sr)
        converted = convert(audio, sr, speaker, model, n_iter=n_iter)
        stem = Path(clip["path"]).stem
        dst = out_dir / "converted" / f"{stem}__to__{name}.wav"
        write_wav(out_dir / "source" / f"{stem}.wav", audio, sr)
        write_wav(dst, converted, sr)
        written.append(dst)
        audio_seconds += audio.size / sr
        text = f' "{clip["text"]}"' if clip.get("text") else ""
        print(f"  {clip['path']} ({clip.get('speaker', '?')}, {audio.size / sr:.1f} s){text} -> {dst}")
        if first is None:
            first = (clip, audio, converted)
    human = load_human_clip(manifest, sr)
    if human is not None:
        human_name, human_audio = human
        targets = [(name, speaker)] if target is not None else [
            (t["name"], load_speaker(examples / t["speaker"], model))
            for t in manifest.get("targets", []) if t.get("speaker")]
        write_wav(out_dir / "source" / f"{human_name}.wav", human_audio, sr)
        print(f"converting a human voice ({human_name}, {human_audio.size / sr:.1f} s) to {len(targets)} target(s)")
        for target_name, target_speaker_code in targets:
            converted = convert(human_audio, sr, target_speaker_code, model, n_iter=n_iter)
            dst = out_dir / "converted" / f"{human_name}__to__{target_name}.wav"
            write_wav(dst, converted, sr)
            written.append(dst)
            audio_seconds += human_audio.size / sr
            print(f"  -> {dst}")
            if target_name == name:
                first = ({"path": f"{human_name} (alsa-utils)", "speaker": "a human voice"}, human_audio, converted)
    wall = time.perf_counter() - start

    figure = out_dir / "spectrograms.png"
    clip, audio, converted = first
    panels = [(f"source: {clip['path']} (speaker {clip.get('speaker', '?')})", audio),
              (f"converted to '{name}'", converted)]
    if reference is not None and reference.is_file():
        panels.append((f"target speaker's own speech: {reference.relative_to(examples)}", read_audio(reference, sr=sr)[0]))
    made = spectrogram_figure(panels, model.feature_config, figure)
    print(f"{len(written)} clip(s), {audio_seconds:.1f} s of audio in {wall:.1f} s "
          f"({audio_seconds / max(wall, 1e-9):.0f}x real time)")
    if made:
        print(f"spectrograms: {figure}")
    print(f"listen: {out_dir / 'source'} (originals) and {out_dir / 'converted'} (converted)")
    return {"converted": [str(p) for p in written], "figure": str(figure) if made else None,
            "target": name, "audio_seconds": audio_seconds, "wall_seconds": wall}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vc.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="out", help="output folder (default: out)")
    parser.add_argument("--target", default=None,
                        help="a bundled target name (examples/manifest.json) or a speaker.npy path")
    parser.add_argument("--model", default=None, metavar="MODEL_DIR",
                        help="model directory (default: $VC_MODEL, else models/default)")
    parser.add_argument("--n-iter", type=int, default=DEFAULT_N_ITER,
                        help=f"Griffin-Lim iterations (default {DEFAULT_N_ITER})")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    args = parser.parse_args(argv)
    from vc.audio import AudioError
    from vc.model import ModelError
    from vc.speakers import SpeakerError

    try:
        run_demo(args.out, target=args.target, model_dir=args.model, n_iter=args.n_iter, device=args.device)
    except (DemoError, ModelError, SpeakerError, AudioError, OSError, ValueError) as exc:
        print(f"vc.demo: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
