"""The leukowatch HTTP service: REST API, CDS Hooks 2.0 services and the web page (FastAPI).

`create_app(Settings)` builds the app; `leukowatch serve` runs it under uvicorn. See the README section on the service.
"""

from .app import create_app
from .config import Settings

__all__ = ["create_app", "Settings"]
