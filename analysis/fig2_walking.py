"""Fig. 2 (and 10, 11): walking mu per injection point for additive noise.

    python analysis/fig2_walking.py --store runs/STUDY [--out report]
    python analysis/fig2_walking.py --mongo-uri mongodb://HOST:27017 --db DB --collection COLL [--out DIR]
"""

from _source import make

if __name__ == "__main__":
    make("fig2", __doc__)
