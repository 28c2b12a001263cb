"""Fig. 3: fitted lower accuracy bound a_min per injection point, multiplicative walking noise.

    python analysis/fig3_amin.py --store runs/STUDY [--out report]
    python analysis/fig3_amin.py --mongo-uri mongodb://HOST:27017 --db DB --collection COLL [--out DIR]
"""

from _source import make

if __name__ == "__main__":
    make("fig3", __doc__)
