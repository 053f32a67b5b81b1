"""The toy study: a dev-only settings sweep, then seeds x methods with controls, CIs and an error decomposition.

design: the systems and the sweep's variants; runner: :class:`Study`, the resumable job graphs; report: the tables,
figures and probes; cli: what the demo, sweep, study and transfer_study tools share.
"""

from espnet_ot.toy.study.cli import add_study_arguments, open_study, run_or_exit
from espnet_ot.toy.study.design import METHOD_NAMES, METHODS, SWEEP, SWEEP_SEED, Method
from espnet_ot.toy.study.report import StudyReport
from espnet_ot.toy.study.runner import Study
from espnet_ot.toy.world import TOY_CONF

REPO_CONF = TOY_CONF  # its former name, from when the configs were conf/demo (outside the package)

__all__ = [
    "METHODS",
    "METHOD_NAMES",
    "Method",
    "REPO_CONF",
    "SWEEP",
    "SWEEP_SEED",
    "Study",
    "StudyReport",
    "TOY_CONF",
    "add_study_arguments",
    "open_study",
    "run_or_exit",
]
