"""The web dashboard: segment sizes, group shares and flows, the live feed of changes, a
customer's segments and why, and the rules in force (see docs/dashboard.md).

It reads the Redis view (connectors.redis_view) and the worker's Query API; `segmenter
dashboard` serves it. The browser files are in static/ (libraries vendored from npm by
frontend/vendor.mjs), so it works without internet."""

from connectors.dashboard.app import create_dashboard_app, serve, session_value
from connectors.dashboard.data import DashboardOptions

__all__ = ["DashboardOptions", "create_dashboard_app", "serve", "session_value"]
