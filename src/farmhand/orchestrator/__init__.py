"""`farmhand orchestrator`: the tutorial's Part 2, spreading frame batches over nodes."""

from farmhand.orchestrator.app import OrchestratorSettings, create_orchestrator_app

__all__ = ["OrchestratorSettings", "create_orchestrator_app"]
