"""Table I: the midpoint noise level mu of global noise per dataset, model, BatchNorm and noise kind.

    python analysis/table1.py --store runs/STUDY [--out report]
    python analysis/table1.py --mongo-uri mongodb://HOST:27017 --db DB --collection COLL [--out DIR]
"""

from _source import make

if __name__ == "__main__":
    make("table1", __doc__)
