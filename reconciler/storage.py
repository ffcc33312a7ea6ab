"""How the app reaches its own storage account: one value for every Tables, Blobs and Queues client.

Owns the two forms of `ARS_STORAGE_CONNECTION`, the same two the Functions host accepts for the
queue triggers' `connection` (they bind to this name):

- a connection string in the setting itself (Azurite, local runs, the demo);
- an identity-based connection: no such setting, but settings under its prefix, one service URI
  per service the app uses and the managed identity
  (`ARS_STORAGE_CONNECTION__queueServiceUri`, `__blobServiceUri`, `__tableServiceUri`,
  `__credential=managedidentity`, `__clientId`; "Identity-based connections",
  https://learn.microsoft.com/azure/azure-functions/functions-bindings-storage-queue#identity-based-connections
  and "Common properties for identity-based connections",
  https://learn.microsoft.com/azure/azure-functions/functions-reference#common-properties-for-identity-based-connections).
  Then no account key exists anywhere and the account can refuse shared-key access.

Adapters (ledger, leases, outbox, retention, runs, fan-out queue) take `str | StorageAccess` and
build their client with `table_service` / `blob_service` / `queue_client`. Must not know tables,
containers or queues by name.
"""

from __future__ import annotations

from typing import Any

from azure.core.credentials_async import AsyncTokenCredential
from azure.data.tables.aio import TableServiceClient
from azure.storage.blob.aio import BlobServiceClient
from azure.storage.queue.aio import QueueClient

from reconciler.errors import ConfigurationError
from reconciler.settings import Settings

SETTING = "ARS_STORAGE_CONNECTION"


class StorageAccess:
    """A connection string, or the three service URIs with the managed identity. For the identity
    form one credential is made on first use (on the worker's loop) and closed by `close()`."""

    def __init__(
        self,
        connection_string: str | None = None,
        *,
        blob_uri: str | None = None,
        queue_uri: str | None = None,
        table_uri: str | None = None,
        client_id: str | None = None,
        proxy: str | None = None,
    ) -> None:
        uris = {"blobServiceUri": blob_uri, "queueServiceUri": queue_uri, "tableServiceUri": table_uri}
        if connection_string is None:
            missing = [k for k, v in uris.items() if not v]
            if missing:
                raise ConfigurationError(
                    f"setting {SETTING}__{missing[0]}: required for an identity-based storage connection "
                    f"(or set {SETTING} to a connection string)"
                )
            bad = [k for k, v in uris.items() if not str(v).startswith("https://")]
            if bad:
                raise ConfigurationError(f"setting {SETTING}__{bad[0]}: must be an https:// URI")
        self.connection_string = connection_string
        self.blob_uri, self.queue_uri, self.table_uri = blob_uri, queue_uri, table_uri
        self.client_id = client_id
        self.proxy = proxy  # forward proxy for every request (ARS_HTTPS_PROXY); None: direct
        self._credential: AsyncTokenCredential | None = None

    @property
    def identity(self) -> bool:
        return self.connection_string is None

    def credential(self) -> AsyncTokenCredential:
        if self._credential is None:
            from azure.identity.aio import ManagedIdentityCredential

            # A user-assigned identity is named by its client ID; none means the system-assigned one.
            self._credential = ManagedIdentityCredential(client_id=self.client_id)
        return self._credential

    async def close(self) -> None:
        cred, self._credential = self._credential, None
        if cred is not None:
            await cred.close()


def from_settings(settings: Settings) -> StorageAccess:
    """The identity form when its service URIs are set, else the connection string."""
    proxy = settings.outbound_proxy.get_secret_value() if settings.outbound_proxy is not None else None
    if settings.storage_blob_uri or settings.storage_queue_uri or settings.storage_table_uri:
        if settings.storage_credential not in (None, "managedidentity"):
            raise ConfigurationError(f"setting {SETTING}__credential: only 'managedidentity' is supported")
        return StorageAccess(
            blob_uri=settings.storage_blob_uri,
            queue_uri=settings.storage_queue_uri,
            table_uri=settings.storage_table_uri,
            client_id=settings.storage_client_id,
            proxy=proxy,
        )
    return StorageAccess(settings.storage_connection.get_secret_value(), proxy=proxy)


def _access(conn: str | StorageAccess) -> StorageAccess:
    return conn if isinstance(conn, StorageAccess) else StorageAccess(conn)


def transport_options(a: StorageAccess, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Every storage client's transport settings, the same for Tables, Blobs and Queues.

    `use_env_settings=False`: azure-core's aiohttp transport otherwise opens its session with
    trust_env, and aiohttp then looks up the proxy in the environment and the host in ~/.netrc on
    every request, each a thread-pool hop (issue #18). The proxy, if any, was read once at start-up
    (ARS_HTTPS_PROXY) and goes to azure-core's ProxyPolicy, which every storage client has.
    """
    out = {"use_env_settings": False, **kwargs}
    if a.proxy is not None:
        out.setdefault("proxies", {"http": a.proxy, "https": a.proxy})
    return out


def table_service(conn: str | StorageAccess, **kwargs: Any) -> TableServiceClient:
    a = _access(conn)
    kwargs = transport_options(a, kwargs)
    if a.connection_string is not None:
        return TableServiceClient.from_connection_string(a.connection_string, **kwargs)
    return TableServiceClient(str(a.table_uri), credential=a.credential(), **kwargs)


def blob_service(conn: str | StorageAccess, **kwargs: Any) -> BlobServiceClient:
    a = _access(conn)
    kwargs = transport_options(a, kwargs)
    if a.connection_string is not None:
        return BlobServiceClient.from_connection_string(a.connection_string, **kwargs)
    return BlobServiceClient(str(a.blob_uri), credential=a.credential(), **kwargs)


def queue_client(conn: str | StorageAccess, queue: str, **kwargs: Any) -> QueueClient:
    a = _access(conn)
    kwargs = transport_options(a, kwargs)
    if a.connection_string is not None:
        return QueueClient.from_connection_string(a.connection_string, queue, **kwargs)
    return QueueClient(str(a.queue_uri), queue, credential=a.credential(), **kwargs)
