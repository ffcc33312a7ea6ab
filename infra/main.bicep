// ars-reconciler: the Function App (Flex Consumption, Python 3.11) and what it needs in its own
// resource group: two storage accounts (the host's, with the deployment package in its own
// container; the app's data: ledger, leases, run records, fan-out queue), a user-assigned managed
// identity, Application Insights, app settings and storage role assignments.
// Access to the hub (the custom network roles) is granted where the hub lives: see hub-access.bicep.
//
// No storage key anywhere: both accounts refuse shared-key access, and the host and the code reach
// them with the identity ("identity-based connections",
// https://learn.microsoft.com/azure/azure-functions/functions-reference#connecting-to-host-storage-with-an-identity
// for AzureWebJobsStorage, and
// https://learn.microsoft.com/azure/azure-functions/functions-bindings-storage-queue#identity-based-connections
// for ARS_STORAGE_CONNECTION, which the queue triggers and reconciler/storage.py both read).

targetScope = 'resourceGroup'

@description('Azure region (one that offers Flex Consumption)')
param location string = resourceGroup().location

@description('Short name used in resource names (letters and digits)')
@minLength(3)
@maxLength(12)
param baseName string = 'arsrec'

@description('NCRONTAB schedule of the timer reconcile (six fields, UTC)')
param timerSchedule string = '0 */5 * * * *'

@description('Fan out one queue message per target (fleets); off runs every target in the timer')
param fanout bool = false

@description('Desired-state document, relative to the deployed app root')
param desiredStatePath string = 'desired-state.yaml'

@description('Key Vault secret URI of the Teams Workflows webhook; empty = no Teams alerts')
param teamsWebhookSecretUri string = ''

@description('Agent token settings: { "NVA1_AGENT_TOKEN": "<Key Vault secret URI>", ... }')
param agentTokenSecretUris object = {}

@description('https URL of this app for links in Teams cards (known after the first deployment); empty = unset')
param publicBaseUrl string = ''

@description('Most instances Flex Consumption may scale out to')
param maximumInstanceCount int = 40

var suffix = uniqueString(resourceGroup().id, baseName)
var storageName = toLower('${baseName}${substring(suffix, 0, 8)}')
var hostStorageName = toLower('${baseName}h${substring(suffix, 0, 8)}')
var deploymentContainer = 'app-package'
// Built-in data roles, by ID ("Azure built-in roles for Storage",
// https://learn.microsoft.com/azure/role-based-access-control/built-in-roles/storage). Data
// Contributor, not Owner: Owner adds only POSIX ACL and ownership management of hierarchical-
// namespace accounts, which neither account has.
var roles = {
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
}
// The app's data: ledger and alert tables, lease and run-record blobs, the fan-out queue.
var dataRoles = [
  roles.storageBlobDataContributor
  roles.storageQueueDataContributor
  roles.storageTableDataContributor
]
// The host's storage (timer schedule and lock blobs, keys, the deployment package): blobs only.
var hostRoles = [
  roles.storageBlobDataContributor
]

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${baseName}'
  location: location
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageName
  location: location
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  properties: {
    minimumTlsVersion: 'TLS1_2'
    allowBlobPublicAccess: false
    supportsHttpsTrafficOnly: true
    allowSharedKeyAccess: false // the identity only: no key exists to leak
  }
}

resource hostStorage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: hostStorageName
  location: location
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  properties: {
    minimumTlsVersion: 'TLS1_2'
    allowBlobPublicAccess: false
    supportsHttpsTrafficOnly: true
    allowSharedKeyAccess: false
  }
}

resource hostBlobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: hostStorage
  name: 'default'
}

// The deployment package lives in its own container of the host's account, apart from the data.
resource packageContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: hostBlobService
  name: deploymentContainer
}

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-${baseName}-${suffix}'
  location: location
  properties: {
    sku: { name: 'PerGB2018' }
    retentionInDays: 30
  }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-${baseName}-${suffix}'
  location: location
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logs.id
  }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: 'plan-${baseName}-${suffix}'
  location: location
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

var baseSettings = {
  // The host's own storage, through the managed identity (no key).
  AzureWebJobsStorage__accountName: hostStorage.name
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identity.properties.clientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: insights.properties.ConnectionString
  // Worker-side OpenTelemetry, to pair with host.json "telemetryMode": "OpenTelemetry".
  PYTHON_ENABLE_OPENTELEMETRY: 'true'
  // DefaultAzureCredential picks the user-assigned identity by its client ID.
  AZURE_CLIENT_ID: identity.properties.clientId
  // The app's storage, identity-based: the queue triggers bind to this prefix, and
  // reconciler/storage.py builds its Tables, Blobs and Queues clients from the same settings.
  ARS_STORAGE_CONNECTION__blobServiceUri: storage.properties.primaryEndpoints.blob
  ARS_STORAGE_CONNECTION__queueServiceUri: storage.properties.primaryEndpoints.queue
  ARS_STORAGE_CONNECTION__tableServiceUri: storage.properties.primaryEndpoints.table
  ARS_STORAGE_CONNECTION__credential: 'managedidentity'
  ARS_STORAGE_CONNECTION__clientId: identity.properties.clientId
  ARS_DESIRED_STATE: desiredStatePath
  ARS_TIMER_SCHEDULE: timerSchedule
  ARS_FANOUT: fanout ? 'true' : 'false'
  ARS_FANOUT_QUEUE: 'ars-reconcile'
  ARS_TABLE_PREFIX: 'ars'
}

var teamsSettings = empty(teamsWebhookSecretUri) ? {} : {
  ARS_TEAMS_WEBHOOK_URL: '@Microsoft.KeyVault(SecretUri=${teamsWebhookSecretUri})'
}

var tokenSettings = toObject(items(agentTokenSecretUris), item => item.key, item => '@Microsoft.KeyVault(SecretUri=${item.value})')

var urlSettings = empty(publicBaseUrl) ? {} : { ARS_PUBLIC_BASE_URL: publicBaseUrl }

var appSettings = union(baseSettings, teamsSettings, tokenSettings, urlSettings)

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: '${baseName}-${suffix}'
  location: location
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    // Key Vault references resolve with the same identity (grant it "Key Vault Secrets User").
    keyVaultReferenceIdentity: identity.id
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${hostStorage.properties.primaryEndpoints.blob}${deploymentContainer}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identity.id
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: 2048
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      appSettings: [for s in items(appSettings): { name: s.key, value: s.value }]
    }
  }
  dependsOn: [
    packageContainer
  ]
}

resource dataRoleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in dataRoles: {
  name: guid(storage.id, identity.id, role)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}]

resource hostRoleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in hostRoles: {
  name: guid(hostStorage.id, identity.id, role)
  scope: hostStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}]

output functionAppName string = site.name
output functionAppUrl string = 'https://${site.properties.defaultHostName}'
output identityPrincipalId string = identity.properties.principalId
output identityClientId string = identity.properties.clientId
output storageAccountName string = storage.name
output hostStorageAccountName string = hostStorage.name
