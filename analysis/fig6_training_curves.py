"""Fig. 6: validation accuracy per epoch for several levels of global noise.

    python analysis/fig6_training_curves.py --store runs/STUDY [--out report]
    python analysis/fig6_training_curves.py --mongo-uri mongodb://HOST:27017 --db DB --collection COLL [--out DIR]
"""

from _source import make

if __name__ == "__main__":
    make("fig6", __doc__)
