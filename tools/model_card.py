"""Write a model directory's card: README.md with the training record and evaluation figures, plus
spectrogram PNGs of reconstructions and of a speaker swap on held-out open-corpus speakers.

    python tools/model_card.py --run runs/default --model models/default --corpus data/open-corpus \
        --eer eer.json [--conversion conversion.json] --command "vc-train ..."
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vc.files import atomic_write, save_figure  # noqa: E402 - after the path set-up



def spectrogram_figures(model_dir: Path, corpus: Path, n_examples: int = 3) -> dict:
    """Reconstruction and swap figures on test speakers; returns the file names written."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from training.data.corpora import open_corpus
    from vc.audio import read_audio
    from vc.conversion import reconstruct_features
    from vc.dsp import log_magnitude
    from vc.model import load_model
    from vc.speakers import enroll

    model = load_model(model_dir, threads=1)
    cfg = model.feature_config
    test = open_corpus(corpus).utterances("test")
    speakers = sorted({u.speaker for u in test})
    by_speaker = {s: [u for u in test if u.speaker == s] for s in speakers}
    picks = speakers[:: max(1, len(speakers) // n_examples)][:n_examples]
    # Enrol on the second half of each speaker's files; the figures show files from the first half.
    codes = {s: enroll([u.path for u in by_speaker[s][len(by_speaker[s]) // 2:]], model).embedding
             for s in picks}

    def show(ax, frames, title):
        ax.imshow(frames.T, origin="lower", aspect="auto", cmap="magma", vmin=-9, vmax=3)
        ax.set_title(title, fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])

    fig, axes = plt.subplots(2, len(picks), figsize=(3.2 * len(picks), 4.2), squeeze=False)
    for col, speaker in enumerate(picks):
        frames = log_magnitude(read_audio(by_speaker[speaker][2].path)[0], cfg=cfg)
        show(axes[0, col], frames, f"{speaker}: input")
        show(axes[1, col], reconstruct_features(frames, codes[speaker], model), "reconstruction (own f)")
    fig.suptitle("Held-out speakers: log-magnitude input and DSAE reconstruction", fontsize=9)
    save_figure(fig, model_dir / "reconstruction.png", bbox_inches="tight")
    plt.close(fig)

    source, target = picks[0], picks[-1]
    # A sentence both speakers read (the open corpus's u000 is read by everyone) makes the rows comparable;
    # corpora without one show each speaker's first file.
    common = sorted({u.utterance for u in by_speaker[source]} & {u.utterance for u in by_speaker[target]})
    shared = {s: next((u for u in by_speaker[s] if common and u.utterance == common[0]), by_speaker[s][0])
              for s in (source, target)}
    src_frames = log_magnitude(read_audio(shared[source].path)[0], cfg=cfg)
    tgt_frames = log_magnitude(read_audio(shared[target].path)[0], cfg=cfg)
    fig, axes = plt.subplots(1, 3, figsize=(10, 2.8), squeeze=False)
    show(axes[0, 0], src_frames, f"source: {source}")
    show(axes[0, 1], reconstruct_features(src_frames, codes[target], model), f"z of source, f of {target}")
    show(axes[0, 2], tgt_frames, f"{target}'s own speech" + (" (same sentence)" if common else ""))
    save_figure(fig, model_dir / "swap.png", bbox_inches="tight")
    plt.close(fig)
    return {"reconstruction": "reconstruction.png", "swap": "swap.png", "source": source, "target": target}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--eer", type=Path, help="vc-eer --json output")
    parser.add_argument("--conversion", type=Path, help="tools/eval_conversion.py --json output")
    parser.add_argument("--command", required=True, action="append",
                        help="the exact training command; repeat it for a run trained in stages")
    parser.add_argument("--note", action="append", default=[], help="a paragraph for the card (repeatable)")
    parser.add_argument("--training-minutes", type=float, help="wall time of training")
    args = parser.parse_args(argv)

    from vc.model import load_model

    model = load_model(args.model, threads=1)
    with open(args.run / "log.csv", newline="") as fh:
        log = list(csv.DictReader(fh))
    last = log[-1]
    minutes = args.training_minutes or float(last["time_s"]) / 60.0  # time_s is cumulative
    figures = spectrogram_figures(args.model, args.corpus)
    eer = json.loads(args.eer.read_text()) if args.eer else {}
    conv = json.loads(args.conversion.read_text()) if args.conversion else {}
    meta = model.metadata
    sizes = ", ".join(f"{k} {meta[k]}" for k in ("f_dim", "z_dim", "hidden_dim") if k in meta)

    lines = [
        f"# Model card: {meta.get('model_id', args.model.name)}",
        "",
        "A Disentangled Sequential Autoencoder (Li & Mandt, ICML 2018) for 16 kHz speech: 200 log-magnitude",
        "bins per 10 ms frame, 20-frame (200 ms) segments; `encoder.onnx` infers the static code f and the",
        "dynamic codes z, `decoder.onnx` rebuilds the features. The metadata in each file carries the",
        "feature settings, normalisation statistics and sizes.",
        "",
        f"- variant: {meta.get('variant')}; sizes: {sizes}",
        f"- training data: `{meta.get('corpus')}` train split (the open corpus of `vc-corpus synth`, default "
        "settings: 56 train / 8 dev / 16 test speakers, 40 utterances each)",
        f"- {'last stage' if len(args.command) > 1 else 'training'}: epochs {last['epoch']}, steps "
        f"{last['global_step']}; training time on a 2-core CPU: {minutes:.0f} min (shared with other jobs)",
        f"- validation ELBO (dev split, nats per 200 ms segment): {float(last['val_elbo']):.1f} "
        f"(reconstruction {float(last['val_recon']):.1f}, KL f {float(last['val_kl_f']):.2f}, "
        f"KL z {float(last['val_kl_z']):.1f})",
        "",
        "## Reproduce",
        "```sh",
        "vc-corpus synth data/open-corpus",
        "vc-features data/open-corpus data/features",
        *args.command,
        f"vc-export {args.run} -o {args.model}",
        "```",
        "",
    ]
    for note in args.note:
        lines += [note, ""]
    if eer:
        lines += ["## Speaker verification (open-corpus test speakers, all pairs, cosine)", "",
                  "| embedding | dim | EER | minDCF (p=0.01) |", "|---|---|---|---|"]
        for r in eer.get("results", []):
            lines.append(f"| {r['embedding']} | {r['dim']} | {100 * r['eer']:.2f} % | {r['min_dcf']:.3f} |")
        lines += ["", f"{eer.get('trials')} trials ({eer.get('target_trials')} target). "
                  "f should identify speakers, z should not.", ""]
        plots = [f"![{alt}]({name})" for name, alt in (("det.png", "DET"), ("det-f-pca.png", "f by speaker"))
                 if (args.model / name).is_file()]
        if plots:
            lines += [" ".join(plots), ""]
    if conv:
        lines += ["## Conversion (tools/eval_conversion.py, Resemblyzer embeddings)", "",
                  f"target_closer_rate {conv['target_closer_rate']:.2f}, mean cosine to target "
                  f"{conv['mean_cos_target']:.3f}, to source {conv['mean_cos_source']:.3f} "
                  f"({conv['conversions']} conversions; strength {conv.get('strength', 1.0):g}, harmonics "
                  f"{'rebuilt at the target pitch' if conv.get('harmonics') else 'off'}).", ""]
    lines += ["## Figures", "",
              "Reconstructions of held-out speakers (input above, reconstruction with their own f below):", "",
              f"![reconstruction]({figures['reconstruction']})", "",
              f"Speaker swap: z from {figures['source']}, f of {figures['target']}:", "",
              f"![swap]({figures['swap']})", ""]
    card = args.model / "README.md"
    with atomic_write(card, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines))
    print(f"wrote {card}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
