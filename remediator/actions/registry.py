"""The one registry of action implementations, by the names steps use.

Every name declared in ``remediator.actions.declare.ACTIONS`` has an implementation here (a
test checks it). Actions that need another action (scale_workers reloads PHP-FPM, diagnose
runs config tests) are bound to the service control here, in one place.
"""

from __future__ import annotations

from remediator.actions import command, control, diagnose, notify, scale
from remediator.actions.base import ActionFn


def all_actions() -> dict[str, ActionFn]:
    return {
        **control.CONTROL_ACTIONS,
        **scale.actions(config_test=control.config_test_service, reload=control.reload_service),
        **diagnose.actions(config_test=control.config_test_service),
        **command.ACTIONS,
        **notify.ACTIONS,
    }
