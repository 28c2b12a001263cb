"""Fig. 7: two stacked logistics fitted to a curve with a plateau.

    python analysis/fig7_double_logistic.py --store runs/STUDY [--out report]
    python analysis/fig7_double_logistic.py --mongo-uri mongodb://HOST:27017 --db DB --collection COLL [--out DIR]
"""

from _source import parse, show

if __name__ == "__main__":
    args, runs = parse(__doc__.splitlines()[0])
    from walking_noise.report import fig7_double_logistic

    show(fig7_double_logistic(runs, args.out))
