"""Put on PYTHONPATH by tests/integration/test_get_flops.py: Python imports this at start-up
in the process of mmdet's stock ``get_flops.py``, which then runs unmodified.

The tool prints only the detector's total, to three significant digits. This spy replaces
mmengine's ``FlopAnalyzer`` where ``get_model_complexity_info`` looks it up by a subclass
that records, per analysis, the counts by operator of the backbone and the neck, the input
size traced and the modules never called, and writes them to ``$SIDT_FLOPS_SPY_OUT`` (JSON)
at exit. Nothing of sidt_mmdet is imported here: the config's ``custom_imports`` does that,
as it does for a user.
"""
import atexit
import json
import os

from mmengine.analysis import print_helper

_records = []


class _RecordingFlopAnalyzer(print_helper.FlopAnalyzer):
    def total(self, module_name=''):
        total = super().total(module_name)
        if module_name == '':
            by_op = self.by_module_and_operator()
            _records.append(dict(
                total=float(total), input_size=list(self._inputs[0].shape[-2:]),
                modules={name: {op: float(n) for op, n in ops.items()}
                         for name, ops in by_op.items() if name in ('backbone', 'neck')},
                uncalled=sorted(self.uncalled_modules())))
        return total


def _dump():
    with open(os.environ['SIDT_FLOPS_SPY_OUT'], 'w') as f:
        json.dump(_records, f)


if os.environ.get('SIDT_FLOPS_SPY_OUT'):
    print_helper.FlopAnalyzer = _RecordingFlopAnalyzer
    atexit.register(_dump)
