"""infra/main.bicep keeps no storage key: both accounts refuse shared keys, every storage connection
(the host's and the app's) is identity-based, the identity holds Data Contributor roles (never an
Owner role), and the identity-based settings it writes are the ones the code and the queue
triggers read (the Bicep CLI is not here: the text is checked, and the settings are loaded)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from azure.identity.aio import ManagedIdentityCredential

import function_app
from localenv.host import functions, trigger
from reconciler import storage
from reconciler.composition import Worker
from reconciler.errors import ConfigurationError
from reconciler.event_intake import EventIntake
from reconciler.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
BICEP = (ROOT / "infra" / "main.bicep").read_text()
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
# Built-in role IDs, from "Azure built-in roles for Storage" and "Azure built-in roles"
# (https://learn.microsoft.com/azure/role-based-access-control/built-in-roles/storage,
#  https://learn.microsoft.com/azure/role-based-access-control/built-in-roles#privileged).
DATA_CONTRIBUTORS = {
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
}
TOO_MUCH = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner",
    "17d1049b-9a84-46fb-8f53-869881c3d3ab": "Storage Account Contributor (can list keys)",
    "81a9662b-bebf-436f-a333-f67b29880f12": "Storage Account Key Operator Service Role",
}
PREFIX = "ARS_STORAGE_CONNECTION__"


def resources(kind: str) -> dict[str, str]:
    """Each `resource <name> '<kind>@...' = {...}` block's text, by symbolic name."""
    out = {}
    for m in re.finditer(rf"^resource (\w+) '{re.escape(kind)}@[^']+' = (?:\[for [^:]+: )?\{{\n(.*?)^\}}", BICEP, re.M | re.S):
        out[m.group(1)] = m.group(2)
    return out


def app_settings() -> dict[str, str]:
    block = BICEP[BICEP.index("var baseSettings = {"):]
    block = block[: block.index("\n}\n")]
    return dict(re.findall(r"^  (\w+): (.+)$", block, re.M))


def test_no_storage_key_is_read_or_written() -> None:
    for forbidden in ("listKeys", "AccountKey=", "accountKey", "primaryKey", "connectionString"):
        assert forbidden not in BICEP, forbidden
    assert "ARS_STORAGE_CONNECTION" not in app_settings()  # the connection-string form


def test_both_storage_accounts_refuse_shared_keys() -> None:
    accounts = resources("Microsoft.Storage/storageAccounts")
    assert set(accounts) == {"storage", "hostStorage"}
    for name, body in accounts.items():
        assert re.search(r"^\s*allowSharedKeyAccess: false\b", body, re.M), name


def test_roles_are_data_contributors_and_never_an_owner() -> None:
    used = {g.lower() for g in GUID.findall(BICEP)}
    assert used == set(DATA_CONTRIBUTORS), used
    assert not used & set(TOO_MUCH)
    assigned = resources("Microsoft.Authorization/roleAssignments")
    assert set(assigned) == {"dataRoleAssignments", "hostRoleAssignments"}
    assert "scope: storage\n" in assigned["dataRoleAssignments"]
    assert "scope: hostStorage\n" in assigned["hostRoleAssignments"]


def test_the_deployment_package_has_its_own_container_on_the_hosts_account() -> None:
    (container,) = resources("Microsoft.Storage/storageAccounts/blobServices/containers").values()
    assert "parent: hostBlobService" in container and "name: deploymentContainer" in container
    assert "value: '${hostStorage.properties.primaryEndpoints.blob}${deploymentContainer}'" in BICEP


def test_host_storage_is_identity_based() -> None:
    s = app_settings()
    assert s["AzureWebJobsStorage__accountName"] == "hostStorage.name"
    assert s["AzureWebJobsStorage__credential"] == "'managedidentity'"
    assert s["AzureWebJobsStorage__clientId"] == "identity.properties.clientId"
    assert "AzureWebJobsStorage" not in s


def test_the_app_storage_settings_are_the_ones_the_code_and_the_triggers_read() -> None:
    written = {k for k in app_settings() if k.startswith(PREFIX)}
    read = {str(f.validation_alias) for f in Settings.model_fields.values() if str(f.validation_alias).startswith(PREFIX)}
    assert written == read == {PREFIX + p for p in ("blobServiceUri", "queueServiceUri", "tableServiceUri",
                                                    "credential", "clientId")}  # fmt: skip
    # The queue triggers bind to the same prefix (the host reads <connection>__queueServiceUri).
    fns = functions(function_app.app)
    assert {trigger(fns[n])["connection"] for n in ("reconcile_queue", "reconcile_poison")} == {PREFIX[:-2]}


IDENTITY_ENV = {
    PREFIX + "blobServiceUri": "https://arsdata.blob.core.windows.net/",
    PREFIX + "queueServiceUri": "https://arsdata.queue.core.windows.net/",
    PREFIX + "tableServiceUri": "https://arsdata.table.core.windows.net/",
    PREFIX + "credential": "managedidentity",
    PREFIX + "clientId": "00000000-0000-0000-0000-000000000001",
}


async def test_identity_settings_build_keyless_clients_with_the_managed_identity() -> None:
    access = storage.from_settings(load_settings(IDENTITY_ENV))
    assert access.identity and access.connection_string is None
    try:
        tables = storage.table_service(access)
        blobs = storage.blob_service(access)
        queue = storage.queue_client(access, "ars-reconcile")
        assert tables.url.startswith("https://arsdata.table.core.windows.net")
        assert blobs.url.startswith("https://arsdata.blob.core.windows.net")
        assert queue.url.startswith("https://arsdata.queue.core.windows.net/ars-reconcile")
        for client in (tables, blobs, queue):
            assert isinstance(client.credential, ManagedIdentityCredential)
            assert client.credential is access.credential()  # one credential, closed with the access
            await client.close()
    finally:
        await access.close()


async def test_the_event_intake_uses_the_identity_based_storage_too() -> None:
    """It built its table from the connection string alone, so with shared-key access off (main.bicep)
    every Event Grid event and agent report would have failed in Azure."""
    intake = EventIntake(load_settings(IDENTITY_ENV))
    access, service, table = intake.storage_clients()
    try:
        assert access.identity
        assert table.url.startswith("https://arsdata.table.core.windows.net")
        assert isinstance(table.credential, ManagedIdentityCredential) and table.credential is access.credential()
    finally:
        await service.close()
        await access.close()


def test_a_connection_string_still_works_locally() -> None:
    access = storage.from_settings(load_settings({"ARS_STORAGE_CONNECTION": "UseDevelopmentStorage=true"}))
    assert not access.identity and access.connection_string == "UseDevelopmentStorage=true"


def test_fanout_with_identity_based_storage_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARS_STORAGE_CONNECTION", raising=False)
    for k, v in {**IDENTITY_ENV, "ARS_FANOUT": "true"}.items():
        monkeypatch.setenv(k, v)
    assert Worker.from_environment(ROOT).settings.fanout


@pytest.mark.parametrize(
    ("drop", "change", "named"),
    [
        ("tableServiceUri", {}, "ARS_STORAGE_CONNECTION__tableServiceUri"),
        (None, {PREFIX + "queueServiceUri": "http://arsdata.queue.core.windows.net/"}, "__queueServiceUri"),
        (None, {PREFIX + "credential": "connectionstring"}, "__credential"),
    ],
)
def test_incomplete_identity_settings_stop_the_app_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, drop: str | None, change: dict[str, str], named: str
) -> None:
    monkeypatch.delenv("ARS_STORAGE_CONNECTION", raising=False)
    env = {k: v for k, v in IDENTITY_ENV.items() if drop is None or not k.endswith(drop)} | change
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigurationError, match=re.escape(named)):
        Worker.from_environment(ROOT)
