"""Fig. 5 (and 8, 9): preserved accuracy per injection point, multiplicative walking noise.

    python analysis/fig5_preserved_accuracy.py --store runs/STUDY [--out report]
    python analysis/fig5_preserved_accuracy.py --mongo-uri mongodb://HOST:27017 --db DB --collection COLL [--out DIR]
"""

from _source import make

if __name__ == "__main__":
    make("fig5", __doc__)
