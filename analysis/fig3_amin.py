"""Fig. 3: fitted lower accuracy bound a_min per injection point, multiplicative walking noise.

    python analysis/fig3_amin.py --store runs/STUDY [--out report]
    python analysis/fig3_amin.py --mongo-uri mongodb://HOST:27017 --db DB --collection COLL [--out DIR]
"""

from _source import parse, show

if __name__ == "__main__":
    args, runs = parse(__doc__.splitlines()[0])
    from walking_noise.report import fig3_amin

    show(fig3_amin(runs, args.out))
