"""infra/events.bicep agrees with the code it feeds (the Bicep CLI is not here: text checks).

The event types it subscribes to are the ones reconciler.events acts on, it targets the function
function_app defines, it filters out the reconciler's own identity and dead-letters what it cannot
deliver, and it never puts more than 25 advanced-filter values on one event subscription (Event
Grid's limit, Microsoft Learn "Understand event filtering")."""

from __future__ import annotations

import re
from pathlib import Path

import function_app
from localenv.host import functions, trigger
from reconciler import desired
from reconciler.events import EVENT_TYPES, subject_prefixes

ROOT = Path(__file__).resolve().parents[2]
BICEP = (ROOT / "infra" / "events.bicep").read_text()


def test_subscribes_to_exactly_the_event_types_the_code_acts_on() -> None:
    block = BICEP[BICEP.index("includedEventTypes: [") : BICEP.index("]", BICEP.index("includedEventTypes: ["))]
    assert set(re.findall(r"'(Microsoft\.Resources\.\w+)'", block)) == set(EVENT_TYPES)


def test_delivers_to_the_event_grid_function_of_the_app() -> None:
    name = re.search(r"param functionName string = '(\w+)'", BICEP)
    assert name is not None
    assert trigger(functions(function_app.app)[name.group(1)])["type"] == "eventGridTrigger"


def test_is_a_global_subscription_system_topic_with_filters_and_dead_letter() -> None:
    assert "topicType: 'Microsoft.Resources.Subscriptions'" in BICEP and "location: 'global'" in BICEP
    assert "key: 'data.claims.appid'" in BICEP and "operatorType: 'StringNotIn'" in BICEP
    assert "key: 'subject'" in BICEP and "operatorType: 'StringBeginsWith'" in BICEP
    assert "endpointType: 'StorageBlob'" in BICEP and (ROOT / "infra" / "events-deadletter.bicep").exists()


def test_filter_values_per_event_subscription_stay_within_25() -> None:
    per = int(re.search(r"var prefixesPerSubscription = (\d+)", BICEP).group(1))  # type: ignore[union-attr]
    own_ids = 5  # a user-assigned identity and a few more app IDs at most
    assert per + own_ids <= 25


def test_the_reference_lab_prefixes_fit_one_event_subscription() -> None:
    state = desired.load(ROOT / "schemas" / "examples" / "reference-lab.yaml")
    assert 0 < len(subject_prefixes(state)["sub-1"]) <= 20
