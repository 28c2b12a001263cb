"""Fig. 1: accuracy vs global noise with error bars and the fitted logistic (Eq. 1).

    python analysis/fig1_fit.py --store runs/STUDY [--out report]
    python analysis/fig1_fit.py --mongo-uri mongodb://HOST:27017 --db DB --collection COLL [--out DIR]
"""

from _source import make

if __name__ == "__main__":
    make("fig1", __doc__)
