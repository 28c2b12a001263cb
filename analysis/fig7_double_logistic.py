"""Fig. 7: two stacked logistics fitted to a curve with a plateau.

    python analysis/fig7_double_logistic.py --store runs/STUDY [--out report]
    python analysis/fig7_double_logistic.py --mongo-uri mongodb://HOST:27017 --db DB --collection COLL [--out DIR]
"""

from _source import make

if __name__ == "__main__":
    make("fig7", __doc__)
