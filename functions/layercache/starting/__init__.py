"""The build starter: consumes BuildRequestQueue and starts each request's build once.

Beside the triggers, not inside them: `ordering` (pure: is this request newer than the
branch head?), `tips` (the source's own word on a branch head, when the events can't
tell), `service` (claims with leases, deterministic StartBuild, superseding).
"""
