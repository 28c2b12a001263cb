"""Fig. 2 (and 10, 11): walking mu per injection point for additive noise.

    python analysis/fig2_walking.py --store runs/STUDY [--out report]
    python analysis/fig2_walking.py --mongo-uri mongodb://HOST:27017 --db DB --collection COLL [--out DIR]
"""

from _source import parse, show

if __name__ == "__main__":
    args, runs = parse(__doc__.splitlines()[0])
    from walking_noise.report import fig2_walking_mu

    show(fig2_walking_mu(runs, args.out))
