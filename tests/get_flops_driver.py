"""Run mmdet's stock ``tools/analysis_tools/get_flops.py`` (shipped in the mmdet package)
unmodified, and record what its analyzer counted per module.

Run by the integration tests as ``python tests/get_flops_driver.py OUT_JSON -- ARGS...`` (one
tool run per ``--`` group). The tool prints only the detector's total (to three significant
digits); this driver spies on mmengine's ``FlopAnalyzer`` (a subclass put where
``get_model_complexity_info`` looks it up) and writes, per run, the counts by module and
operator of the backbone and neck, and the input size the tool traced. Nothing of ours is
imported here: the config's ``custom_imports`` does that, as it does for a user.
"""
from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import mmdet
from mmengine.analysis import print_helper

TOOL = Path(mmdet.__file__).parent / '.mim/tools/analysis_tools/get_flops.py'
records: list[dict] = []


class RecordingFlopAnalyzer(print_helper.FlopAnalyzer):
    def total(self, module_name: str = '') -> int:
        total = super().total(module_name)
        if module_name == '':
            by_op = self.by_module_and_operator()
            records.append(dict(
                total=float(total),
                input_size=list(self._inputs[0].shape[-2:]),
                modules={name: {op: float(n) for op, n in ops.items()}
                         for name, ops in by_op.items() if name in ('backbone', 'neck')},
                uncalled=sorted(self.uncalled_modules())))
        return total


def main() -> None:
    out, argv = sys.argv[1], sys.argv[2:]
    runs, current = [], None
    for arg in argv:
        if arg == '--':
            current = []
            runs.append(current)
        else:
            current.append(arg)
    print_helper.FlopAnalyzer = RecordingFlopAnalyzer
    for args in runs:
        sys.argv = [str(TOOL), *args]
        runpy.run_path(str(TOOL), run_name='__main__')
        sys.stdout.flush()
    Path(out).write_text(json.dumps(records))


if __name__ == '__main__':
    main()
