"""dcorch-trio: the StarlingX Distributed Cloud Orchestrator as a Trio actor system."""
