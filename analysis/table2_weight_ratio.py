"""Table II: mean weight magnitude ratio unclamped / clamped near mu, per learnable layer.

    python analysis/table2_weight_ratio.py --store runs/STUDY [--out report]
    python analysis/table2_weight_ratio.py --mongo-uri mongodb://HOST:27017 --db DB --collection COLL [--out DIR]
"""

from _source import make

if __name__ == "__main__":
    make("table2", __doc__)
