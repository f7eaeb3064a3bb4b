"""The SimPy core. ``run_scenario`` is the entry point; ``Simulation`` the engine."""
from netsim.sim.engine import Simulation
from netsim.sim.run import RunResult, run_scenario

__all__ = ["Simulation", "RunResult", "run_scenario"]
