"""The mutation score of the core modules from mutmut's results (``make mutation``).

``--write JSON`` collects mutmut's results under ``mutants/`` into JSON (counts per file,
every mutant not killed with its diff) and regenerates the figures of docs/mutation.md;
``--render JSON`` regenerates docs/mutation.md from a committed JSON without mutmut.
"""
from __future__ import annotations

import argparse
import json

from sidt_mmdet.studies.common import REPO
from sidt_mmdet.studies.mutation import collect, write_doc
from sidt_mmdet.utils.fileio import write_json_atomic


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--write', metavar='JSON', help='collect mutmut results into JSON')
    ap.add_argument('--render', metavar='JSON', help='regenerate the doc from JSON only')
    ap.add_argument('--mutants', default=f'{REPO}/mutants')
    ap.add_argument('--doc', default=f'{REPO}/docs/mutation.md')
    args = ap.parse_args(argv)
    if bool(args.write) == bool(args.render):
        ap.error('give one of --write JSON or --render JSON')
    if args.write:
        res = collect(args.mutants)
        write_json_atomic(args.write, res)
    else:
        with open(args.render) as f:
            res = json.load(f)
    write_doc(res, args.doc)
    print(f'{res["killed"]} / {res["total"]} mutants killed ({res["score"]}%)')


if __name__ == '__main__':
    main()
