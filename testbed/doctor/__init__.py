"""`python -m testbed doctor`: can this machine run testbed clusters, and with which CNI modes?"""

from testbed.doctor.probes import RULES_OUT
from testbed.doctor.render import render
from testbed.doctor.report import run

__all__ = ["RULES_OUT", "render", "run"]
