"""App settings: one typed value read from the environment (Function App settings, local.settings.json).

Owns the names, defaults and meaning of every setting, and the one-line error for a bad one.
Must not build clients. Secrets are `SecretStr` so they never print. This is the one module that
reads the process environment: everything else asks a `Settings` value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydantic import AliasChoices, Field, PrivateAttr, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from reconciler.errors import ConfigurationError
from reconciler.storage_rules import TABLE_PREFIX_PATTERN


class Settings(BaseSettings):
    """Every setting the app reads. Field aliases are the app-setting names."""

    # env_ignore_empty: an app setting that exists but is empty means "not set" (portal and
    # local.settings.json leave optional settings as "").
    model_config = SettingsConfigDict(
        extra="ignore", case_sensitive=True, populate_by_name=True, env_ignore_empty=True
    )

    desired_state: Path = Field(
        default=Path("schemas/examples/reference-lab.yaml"),
        validation_alias="ARS_DESIRED_STATE",
        description="path of the desired-state document (YAML or JSON), relative to the app root",
    )
    arm_endpoint: str | None = Field(
        default=None,
        validation_alias="ARS_ARM_ENDPOINT",
        description="ARM base URL; unset for public Azure. The local emulator sets https://127.0.0.1:<port>",
    )
    arm_ca_bundle: str | None = Field(
        default=None, validation_alias="ARS_ARM_CA_BUNDLE", description="CA file to trust for ARM (emulator only)"
    )
    arm_static_token: SecretStr | None = Field(
        default=None,
        validation_alias="ARS_ARM_STATIC_TOKEN",
        description="fixed bearer token for the local emulator; unset in Azure (managed identity is used)",
    )
    managed_identity_client_id: str | None = Field(
        default=None,
        validation_alias="AZURE_CLIENT_ID",
        description="client ID of the user-assigned managed identity (DefaultAzureCredential reads it)",
    )
    arm_poll_interval: float = Field(default=1.0, ge=0, le=60, validation_alias="ARS_ARM_POLL_INTERVAL")
    arm_concurrency: int = Field(default=96, ge=1, le=512, validation_alias="ARS_ARM_CONCURRENCY")
    arm_reads_per_second: float = Field(default=25.0, gt=0, le=1000, validation_alias="ARS_ARM_READS_PER_SECOND")
    arm_read_burst: int = Field(default=240, ge=1, le=10000, validation_alias="ARS_ARM_READ_BURST")
    arm_retry_backoff: float = Field(default=0.8, ge=0, le=10, validation_alias="ARS_ARM_RETRY_BACKOFF")
    arm_read_timeout: float = Field(default=60.0, gt=0, le=600, validation_alias="ARS_ARM_READ_TIMEOUT")
    # Not named `https_proxy`: settings are also filled by field name (populate_by_name), and the
    # lower-case https_proxy variable of a shell would then set it.
    outbound_proxy: SecretStr | None = Field(
        default=None,
        validation_alias="ARS_HTTPS_PROXY",
        description="forward proxy (http://host:port, credentials allowed) for every ARM and Storage request; "
        "unset = direct. Read once at start-up: HTTPS_PROXY, HTTP_PROXY, NO_PROXY and .netrc are not read",
    )
    storage_connection: SecretStr = Field(
        default=SecretStr("UseDevelopmentStorage=true"),
        validation_alias=AliasChoices("ARS_STORAGE_CONNECTION", "AzureWebJobsStorage"),
        description="Table/Blob/Queue storage for the ledger, leases, outbox and fan-out queue",
    )
    # The identity-based form of ARS_STORAGE_CONNECTION (reconciler.storage): the host's queue
    # triggers read these same names for their `connection`.
    storage_blob_uri: str | None = Field(
        default=None,
        validation_alias="ARS_STORAGE_CONNECTION__blobServiceUri",
        description="identity-based storage: the Blob service URI (leases, run records)",
    )
    storage_queue_uri: str | None = Field(
        default=None,
        validation_alias="ARS_STORAGE_CONNECTION__queueServiceUri",
        description="identity-based storage: the Queue service URI (fan-out queue; the queue triggers read it too)",
    )
    storage_table_uri: str | None = Field(
        default=None,
        validation_alias="ARS_STORAGE_CONNECTION__tableServiceUri",
        description="identity-based storage: the Table service URI (ledger, alerts, outbox)",
    )
    storage_credential: str | None = Field(
        default=None,
        validation_alias="ARS_STORAGE_CONNECTION__credential",
        description="identity-based storage: `managedidentity`",
    )
    storage_client_id: str | None = Field(
        default=None,
        validation_alias="ARS_STORAGE_CONNECTION__clientId",
        description="identity-based storage: client ID of the user-assigned managed identity",
    )
    table_prefix: str = Field(
        default="ars", pattern=TABLE_PREFIX_PATTERN, validation_alias="ARS_TABLE_PREFIX"
    )  # the one table-naming rule: reconciler.storage_rules
    teams_webhook_url: SecretStr | None = Field(
        default=None,
        validation_alias="ARS_TEAMS_WEBHOOK_URL",
        description="Teams Workflows webhook (a secret; may be a Key Vault reference); unset = no alerts",
    )
    heartbeat_url: SecretStr | None = Field(
        default=None, validation_alias="ARS_HEARTBEAT_URL", description="pinged after each completed pass"
    )
    alert_hold_down: float | None = Field(
        default=None,
        ge=0,
        le=86400,
        validation_alias="ARS_ALERT_HOLD_DOWN",
        description="seconds a drift must persist before it pages, for every code; unset = per-code defaults "
        "(180 s, the BGP hold time, for PEER_DOWN and ROUTE_*)",
    )
    alert_fixed_notice: bool = Field(
        default=True,
        validation_alias="ARS_ALERT_FIXED_NOTICE",
        description="post a compact \"fixed automatically\" card per target and pass when the reconciler put "
        "drift back before anyone was paged; false = only incidents",
    )
    public_base_url: str = Field(
        default="http://127.0.0.1:7071",
        validation_alias="ARS_PUBLIC_BASE_URL",
        description="base URL of this app, for links in Teams cards",
    )
    agent_ca_bundle: str | None = Field(
        default=None, validation_alias="ARS_AGENT_CA_BUNDLE", description="CA file to trust for NVA agents"
    )
    agent_client_cert: str | None = Field(
        default=None,
        validation_alias="ARS_AGENT_CLIENT_CERT",
        description="PEM file of the client certificate shown to NVA agents (mutual TLS; the agent pins it)",
    )
    agent_client_key: str | None = Field(
        default=None, validation_alias="ARS_AGENT_CLIENT_KEY", description="PEM file of that certificate's key"
    )
    agent_timeout: float = Field(default=20.0, gt=0, le=120, validation_alias="ARS_AGENT_TIMEOUT")
    verify_timeout: float = Field(
        default=90.0,
        ge=0,
        le=600,
        validation_alias="ARS_VERIFY_TIMEOUT",
        description="after a fix, how long to re-observe ARM for confirmation",
    )
    verify_interval: float = Field(default=5.0, ge=0, le=60, validation_alias="ARS_VERIFY_INTERVAL")
    target_concurrency: int = Field(default=64, ge=1, le=1000, validation_alias="ARS_TARGET_CONCURRENCY")
    timer_schedule: str = Field(
        default="0 */5 * * * *",
        validation_alias="ARS_TIMER_SCHEDULE",
        description="NCRONTAB (six fields, seconds first, UTC) for the timer-triggered reconcile",
    )
    fanout: bool = Field(default=False, validation_alias="ARS_FANOUT")
    fanout_queue: str = Field(
        default="ars-reconcile",
        # 3..56 characters: the host names the poison queue `<name>-poison`, and queue names stop at 63.
        pattern=r"^[a-z0-9][a-z0-9-]{1,54}[a-z0-9]$",
        validation_alias="ARS_FANOUT_QUEUE",
        description="Storage queue for fan-out messages (one per target); `<name>-poison` holds failed ones",
    )
    applicationinsights_connection_string: SecretStr | None = Field(
        default=None,
        validation_alias="APPLICATIONINSIGHTS_CONNECTION_STRING",
        description="Application Insights; when set, logs and traces go there through OpenTelemetry",
    )
    lease_seconds: int = Field(default=30, ge=15, le=60, validation_alias="ARS_LEASE_SECONDS")
    # ---- event-driven passes (Event Grid; reconciler.events) ----
    event_own_ids: str = Field(
        default="",
        validation_alias="ARS_EVENT_OWN_IDS",
        description="comma-separated app/object IDs of the reconciler's own identity (besides AZURE_CLIENT_ID): "
        "events they caused never start a pass",
    )
    event_max_age: float = Field(
        default=900.0, ge=10, le=86400, validation_alias="ARS_EVENT_MAX_AGE",
        description="seconds: an older event is stale and rejected (the timer covers what it was about)",
    )  # fmt: skip
    event_settle: float = Field(
        default=1.0, ge=0, le=60, validation_alias="ARS_EVENT_SETTLE",
        description="seconds an event pass waits (queue visibility delay) so a burst of writes lands first",
    )  # fmt: skip
    report_settle: float = Field(
        default=0.0, ge=0, le=60, validation_alias="ARS_REPORT_SETTLE",
        description="seconds the pass an NVA agent's change report asks for waits (queue visibility delay): "
        "a report is FRR's state after the change, not one write of a burst",
    )  # fmt: skip
    event_min_interval: float = Field(
        default=5.0, ge=0, le=3600, validation_alias="ARS_EVENT_MIN_INTERVAL",
        description="seconds between two event passes of one target (the rate bound under an event storm)",
    )  # fmt: skip
    http_wait: float = Field(
        default=25.0,
        ge=0,
        le=200,  # Azure cuts an HTTP response at 230 s whatever functionTimeout says (reconciler.runs)
        validation_alias="ARS_HTTP_WAIT",
        description="seconds POST /api/reconcile waits for its pass before answering 202 with Location",
    )
    retention_days: int = Field(
        default=90,
        ge=1,
        le=3650,
        validation_alias="ARS_RETENTION_DAYS",
        description="days kept of sent Teams messages, resolved drift, drift history and pass records; "
        "a daily timer deletes older rows",
    )

    @field_validator("arm_endpoint", "public_base_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return v

    @field_validator("outbound_proxy")
    @classmethod
    def _proxy_url(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not v.get_secret_value().startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL of a forward proxy")
        return v

    @property
    def ignored_proxy_variables(self) -> tuple[str, ...]:
        """Proxy variables set in the environment that this app does not read (ARS_HTTPS_PROXY is the
        one it does), for a start-up warning: before issue #18 aiohttp honoured them per request."""
        names = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
        return tuple(n for n in names if n in self._environ)

    @field_validator("timer_schedule")
    @classmethod
    def _ncrontab(cls, v: str) -> str:
        from reconciler.schedule import parse

        parse(v)  # ScheduleError is a ValueError: pydantic reports it against ARS_TIMER_SCHEDULE
        return v

    @field_validator("fanout_queue")
    @classmethod
    def _queue_name(cls, v: str) -> str:
        if "--" in v:
            raise ValueError("queue names may not contain consecutive hyphens")
        return v

    # The environment these settings were read from, kept for the app settings whose names only
    # the desired state knows (agent tokens). Read once, with everything else: in Azure a change
    # of app settings restarts the app, so nothing is missed.
    _environ: dict[str, str] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: Any, /) -> None:
        self._environ = {k: v for k, v in os.environ.items() if v}

    def secret(self, name: str) -> str | None:
        """An app setting named by the desired state (agent tokens). Key Vault references arrive resolved."""
        return self._environ.get(name) or None

    @property
    def app_settings(self) -> Mapping[str, str]:
        """Every non-empty app setting as read at load, read-only: for rules whose names belong to
        the Functions host (`AzureFunctionsJobHost__…` overrides of host.json, fanout.HostQueueRules)."""
        return MappingProxyType(self._environ)

    @property
    def storage_named(self) -> bool:
        """ARS_STORAGE_CONNECTION itself is set, not only the AzureWebJobsStorage fallback."""
        return self.secret("ARS_STORAGE_CONNECTION") is not None


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Read settings; a missing or malformed one raises ConfigurationError naming it, in one line."""
    try:
        if env is None:
            return Settings()
        settings = Settings.model_validate(env)
        settings._environ.update({k: v for k, v in env.items() if v})
        return settings
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        name = ".".join(str(p) for p in first["loc"]) or "settings"
        raise ConfigurationError(f"setting {name}: {first['msg']}") from None
