"""Fig. 4: activation histograms of a noisy-trained vs a clean model and the 2/3-level quantization probe.

    python analysis/fig4_self_binarization.py --noisy NOISY.pt --clean CLEAN.pt [--injection-layer N] [--out report]
    python analysis/fig4_self_binarization.py --store runs/STUDY [--out report]   # checkpoints saved by the runs
"""

import argparse

import _source  # noqa: F401 - puts src/ on the path

if __name__ == "__main__":
    from walking_noise.report import fig4_self_binarization, find_checkpoints
    from walking_noise.report.cli import add_source_arguments, add_study_arguments, load_selected

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noisy", help="checkpoint of the model trained with noise")
    parser.add_argument("--clean", help="checkpoint of the equivalent model trained without noise")
    parser.add_argument("--injection-layer", type=int, default=None, help="default: from the noisy checkpoint")
    add_source_arguments(parser)
    add_study_arguments(parser)
    parser.add_argument("--out", default="report")
    args = parser.parse_args()
    if args.noisy and args.clean:
        pair = {"noisy": args.noisy, "clean": args.clean, "injection_layer": args.injection_layer}
    else:
        pair = find_checkpoints(load_selected(args))
    for path in fig4_self_binarization(pair["noisy"], pair["clean"], None, pair["injection_layer"], args.out):
        print(path)
