"""An alert storm against a real HTTP server: one incident, every copy counted, no 5xx."""

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from approvals.models import AuditEvent
from incidents.models import Incident
from tests.incidents.conftest import ALERTMANAGER_BODY, WEBHOOK_TOKEN

ALERTS = 2000
CLIENTS = 16


@pytest.mark.django_db(transaction=True)
def test_two_thousand_identical_alerts_from_sixteen_clients_leave_one_incident(live_server, default_rules):
    url = f"{live_server.url}/api/webhooks/alertmanager/"
    body = json.dumps(ALERTMANAGER_BODY)
    headers = {"Authorization": f"Bearer {WEBHOOK_TOKEN}", "Content-Type": "application/json"}

    def client(share: int) -> Counter:
        statuses: Counter = Counter()
        with requests.Session() as session:
            for _ in range(share):
                statuses[session.post(url, data=body, headers=headers, timeout=60).status_code] += 1
        return statuses

    with ThreadPoolExecutor(CLIENTS) as pool:
        shares = [ALERTS // CLIENTS + (1 if i < ALERTS % CLIENTS else 0) for i in range(CLIENTS)]
        statuses = sum(pool.map(client, shares), Counter())

    assert statuses == Counter({200: ALERTS})
    incident = Incident.objects.get()
    assert incident.status == "open"
    assert incident.occurrences == ALERTS
    assert AuditEvent.objects.filter(action="incident.created").count() == 1
