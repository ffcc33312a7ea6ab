// Least-privilege access to one hub for the reconciler's managed identity. Deploy it to the
// resource group that holds the Route Server, gateway, firewall and route tables (repeat per hub):
//   az deployment group create -g <hub-rg> -f infra/hub-access.bicep -p principalId=<identity principal id>
// The actions come from reconciler-role.json / reconciler-fixer-role.json, which a unit test keeps
// equal to the SDK calls in reconciler/arm.py.

targetScope = 'resourceGroup'

@description('Principal ID of the reconciler\'s user-assigned managed identity (main.bicep output)')
param principalId string

@description('Also grant the opt-in Azure-side fixes (only if a target here sets policy.azure_writes)')
param allowAzureWrites bool = false

var reader = loadJsonContent('reconciler-role.json')
var fixer = loadJsonContent('reconciler-fixer-role.json')
// A custom role's display name "must be unique at the scope of the Microsoft Entra tenant" (Azure
// RBAC docs, "Azure custom roles", roleName; at most 512 characters). The group name alone collides
// when a second subscription in the tenant has a group of the same name, so every name carries a
// GUID derived from this subscription and group (stable across redeployments).
var roleSuffix = guid(subscription().subscriptionId, resourceGroup().name)

resource readerRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(resourceGroup().id, reader.Name)
  properties: {
    roleName: '${reader.Name} (${resourceGroup().name} ${roleSuffix})'
    description: reader.Description
    type: 'CustomRole'
    permissions: [
      {
        actions: reader.Actions
        notActions: reader.NotActions
      }
    ]
    assignableScopes: [
      resourceGroup().id
    ]
  }
}

resource fixerRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (allowAzureWrites) {
  name: guid(resourceGroup().id, fixer.Name)
  properties: {
    roleName: '${fixer.Name} (${resourceGroup().name} ${roleSuffix})'
    description: fixer.Description
    type: 'CustomRole'
    permissions: [
      {
        actions: fixer.Actions
        notActions: fixer.NotActions
      }
    ]
    assignableScopes: [
      resourceGroup().id
    ]
  }
}

resource readerAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(resourceGroup().id, principalId, readerRole.id)
  properties: {
    roleDefinitionId: readerRole.id
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource fixerAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (allowAzureWrites) {
  name: guid(resourceGroup().id, principalId, 'fixer')
  properties: {
    roleDefinitionId: fixerRole.id
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}
