"""The mutation score of the core modules from mutmut's results (``make mutation``).

``--write JSON`` collects mutmut's results under ``mutants/`` into JSON (counts per file,
every mutant not killed with its diff) and regenerates the figures of docs/mutation.md;
``--render JSON`` regenerates docs/mutation.md from a committed JSON without mutmut.
``--before`` (an earlier run's JSON, for the score before the tests written against its
survivors) and ``--reasons`` (why each survivor is not killed: a list of ``mutants``
patterns and their ``why``) are read when present.
"""
from __future__ import annotations

import argparse
import json
import os.path as osp

from sidt_mmdet.studies.common import REPO
from sidt_mmdet.studies.mutation import collect, write_doc
from sidt_mmdet.utils.fileio import write_json_atomic


def _read(path: str):
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--write', metavar='JSON', help='collect mutmut results into JSON')
    ap.add_argument('--render', metavar='JSON', help='regenerate the doc from JSON only')
    ap.add_argument('--mutants', default=f'{REPO}/mutants')
    ap.add_argument('--doc', default=f'{REPO}/docs/mutation.md')
    ap.add_argument('--before', default=f'{REPO}/docs/mutation_before.json')
    ap.add_argument('--reasons', default=f'{REPO}/docs/mutation_reasons.json')
    args = ap.parse_args(argv)
    if bool(args.write) == bool(args.render):
        ap.error('give one of --write JSON or --render JSON')
    if args.write:
        res = collect(args.mutants)
        write_json_atomic(args.write, res)
    else:
        res = _read(args.render)
    before, reasons = (_read(path) if osp.isfile(path) else None
                       for path in (args.before, args.reasons))
    write_doc(res, args.doc, before, reasons)
    print(f'{res["killed"]} / {res["total"]} mutants killed ({res["score"]}%)')


if __name__ == '__main__':
    main()
