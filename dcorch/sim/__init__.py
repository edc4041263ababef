"""Simulated System Controller and subclouds speaking real HTTP on loopback.

No StarlingX needed: one server hosts them all by path prefix (:mod:`dcorch.sim.endpoints`).
"""

from __future__ import annotations

from dcorch.sim.certs import make_test_pem as make_test_pem
from dcorch.sim.convergence import ConvergenceCheck as ConvergenceCheck
from dcorch.sim.endpoints import SimEndpoints as SimEndpoints
from dcorch.sim.faults import Faults as Faults
from dcorch.sim.server import NotConverged as NotConverged
from dcorch.sim.server import SimCloud as SimCloud
from dcorch.sim.server import open_sim_cloud as open_sim_cloud
from dcorch.sim.state import CloudState as CloudState
from dcorch.sim.state import SimState as SimState

__all__ = (
    "CloudState",
    "ConvergenceCheck",
    "Faults",
    "NotConverged",
    "SimCloud",
    "SimEndpoints",
    "SimState",
    "make_test_pem",
    "open_sim_cloud",
)
