"""The model card's figures and training record. The card itself (MODEL_DIR/README.md) is written by hand:
what each objective term bought is measured by several tools (vc-eer, tools/eval_conversion.py) and judged
against earlier models, which no template says well. This draws the two figures it shows and prints the
record of a run to quote in it:

    python tools/model_card.py --model models/default --corpus data/open-corpus [--run runs/large2-reach50]

reconstruction.png: held-out open-corpus voices (the human corpora are not redistributed), their
log-magnitude input above and the DSAE's reconstruction with their own f below; swap.png: one voice's z
decoded with another's f beside that voice's own speech of the same sentence.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vc.files import save_figure  # noqa: E402 - after the path set-up



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


def training_record(run: Path) -> str:
    """The last row of a run's log.csv: steps, epochs, time and the dev ELBO term by term."""
    with open(run / "log.csv", newline="") as fh:
        log = list(csv.DictReader(fh))
    if not log:
        raise SystemExit(f"model_card: {run / 'log.csv'}: no rows")
    last = log[-1]
    record = f"{run}: epoch {last['epoch']}, step {last['global_step']}, {float(last['time_s']) / 60:.0f} min"
    if last.get("val_elbo"):   # a run without a dev split has no ELBO to report
        record += (f"; dev ELBO {float(last['val_elbo']):.1f} nats per segment (reconstruction "
                   f"{float(last['val_recon']):.1f}, KL f {float(last['val_kl_f']):.2f}, KL z {float(last['val_kl_z']):.1f})")
    return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="the model directory the figures go into")
    parser.add_argument("--corpus", type=Path, required=True, help="a corpus with a test split (the open corpus)")
    parser.add_argument("--run", type=Path, help="a vc-train run directory: print its training record")
    args = parser.parse_args(argv)

    figures = spectrogram_figures(args.model, args.corpus)
    print(f"wrote {args.model / figures['reconstruction']} and {args.model / figures['swap']} "
          f"(swap: z of {figures['source']}, f of {figures['target']})")
    if args.run is not None:
        print(training_record(args.run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
