"""Fig. 1: accuracy vs global noise with error bars and the fitted logistic (Eq. 1).

    python analysis/fig1_fit.py --store runs/STUDY [--out report]
    python analysis/fig1_fit.py --mongo-uri mongodb://HOST:27017 --db DB --collection COLL [--out DIR]
"""

from _source import parse, show

if __name__ == "__main__":
    args, runs = parse(__doc__.splitlines()[0])
    from walking_noise.report import fig1_fit

    show(fig1_fit(runs, args.out))
