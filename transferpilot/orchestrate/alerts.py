"""A notification when a promoted run ends in a state a person should see: a Prefect
automation on the flow-run events of those states, sending to a webhook.

The flow run ends in a Completed state named after its verdict (``DriftDetected``,
``ChampionKept``...), and Prefect emits ``prefect.flow-run.<name>`` on each transition;
the automation reacts to those events and posts the run's name, state and message to a
webhook (Slack's incoming webhooks and most chat tools take ``{"text": ...}``).
"""

from __future__ import annotations

from collections.abc import Sequence

#: The verdicts worth a message by default.
ALERT_STATES = ("DriftDetected", "ChampionKept")
#: The notification block and the automation, by name (created again: replaced).
NAME = "transferpilot-alerts"


def create_alert(url: str, states: Sequence[str] = ALERT_STATES) -> str:
    """Create (or replace) the webhook block and the automation on the configured Prefect
    server; returns the automation's id."""
    from prefect.automations import Automation
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import EventTrigger

    block = CustomWebhookNotificationBlock(
        name=NAME, url=url, json_data={"text": "{{subject}}\n{{body}}"}
    )
    block_id = block.save(NAME, overwrite=True)
    for existing in _automations(NAME):
        existing.delete()
    automation = Automation(
        name=NAME,
        description="transferpilot: a promoted run ended " + " or ".join(states),
        trigger=EventTrigger(
            expect={f"prefect.flow-run.{state}" for state in states},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            posture="Reactive",
            threshold=1,
        ),
        actions=[
            SendNotification(
                block_document_id=block_id,
                subject="transferpilot: {{ flow_run.name }} ended {{ flow_run.state.name }}",
                body="{{ flow_run.state.message }}",
            )
        ],
    ).create()
    return str(automation.id)


def _automations(name: str) -> list:
    from prefect.automations import Automation

    try:
        found = Automation.read(name=name)
    except ValueError:  # none of that name
        return []
    return found if isinstance(found, list) else [found]
