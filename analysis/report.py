"""Every table and figure the runs support, with index.md and index.html.

    python analysis/report.py --store runs/STUDY [--out report]
    python analysis/report.py --mongo-uri mongodb://HOST:27017 --db DB --collection COLL [--out DIR]
"""

from _source import parse

if __name__ == "__main__":
    args, runs = parse(__doc__.splitlines()[0])
    from walking_noise.report import write_report

    print(write_report(runs, args.out))
