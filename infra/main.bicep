// ars-reconciler: the Function App (Flex Consumption, Python 3.11) and what it needs in its own
// resource group: storage (host, deployment package, ledger, leases, fan-out queue), a
// user-assigned managed identity, Application Insights, app settings and storage role assignments.
// Access to the hub (the custom network roles) is granted where the hub lives: see hub-access.bicep.

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
var deploymentContainer = 'app-package'
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
}

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
    // The ledger, leases and fan-out adapters take a connection string today (ARS_STORAGE_CONNECTION);
    // the host itself uses the managed identity.
    allowSharedKeyAccess: true
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource packageContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
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

var storageConnection = 'DefaultEndpointsProtocol=https;AccountName=${storage.name};AccountKey=${storage.listKeys().keys[0].value};EndpointSuffix=${environment().suffixes.storage}'

var baseSettings = {
  // The host's own storage, through the managed identity (no key).
  AzureWebJobsStorage__accountName: storage.name
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identity.properties.clientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: insights.properties.ConnectionString
  // Worker-side OpenTelemetry, to pair with host.json "telemetryMode": "OpenTelemetry".
  PYTHON_ENABLE_OPENTELEMETRY: 'true'
  // DefaultAzureCredential picks the user-assigned identity by its client ID.
  AZURE_CLIENT_ID: identity.properties.clientId
  ARS_STORAGE_CONNECTION: storageConnection
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
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainer}'
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

resource storageRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for r in items(roles): {
  name: guid(storage.id, identity.id, r.value)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', r.value)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}]

output functionAppName string = site.name
output functionAppUrl string = 'https://${site.properties.defaultHostName}'
output identityPrincipalId string = identity.properties.principalId
output identityClientId string = identity.properties.clientId
