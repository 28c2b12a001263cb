"""Fig. 5 (and 8, 9): preserved accuracy per injection point, multiplicative walking noise.

    python analysis/fig5_preserved_accuracy.py --store runs/STUDY [--out report]
    python analysis/fig5_preserved_accuracy.py --mongo-uri mongodb://HOST:27017 --db DB --collection COLL [--out DIR]
"""

from _source import parse, show

if __name__ == "__main__":
    args, runs = parse(__doc__.splitlines()[0])
    from walking_noise.report import fig5_preserved_accuracy

    show(fig5_preserved_accuracy(runs, args.out))
