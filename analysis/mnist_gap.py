"""The gap to Table I, factor by factor: midpoints per cell and epochs, the factor table, mu against epochs.

    python analysis/mnist_gap.py --store runs/mnist_gap --study seml_configs/mnist_gap.yaml [--out results/mnist/gap]
"""

from _source import parse

if __name__ == "__main__":
    args, runs = parse(__doc__.splitlines()[0], out="results/mnist/gap")
    if not args.study:
        raise SystemExit("give --study seml_configs/mnist_gap.yaml: the gap is measured on that study's runs")
    from walking_noise.report.gap import write_gap
    from walking_noise.study import load_study, parse_filters

    for path in write_gap(runs, load_study(args.study, overrides=parse_filters(args.set)), args.out):
        print(path)
