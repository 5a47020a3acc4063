"""changegate: admission control for Kubernetes change management.

Layers (enforced by import-linter, see pyproject.toml):
``model`` (wire formats) <- ``policy`` (pure decisions) <- ``store`` (in-memory index)
<- ``admission`` (HTTPS server) <- ``operator`` / ``cli`` / ``devcluster`` (cluster I/O).
"""

__version__ = "0.1.0"
