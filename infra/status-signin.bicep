// Entra ID sign-in for the status page (App Service authentication, "Easy Auth") on the Function App.
// A module beside main.bicep, deployed after it:
//   az deployment group create -g <rg> -f infra/status-signin.bicep \
//     -p functionAppName=<app> tenantId=<tenant> clientId=<app registration's client id>
// Resource shape: Microsoft.Web/sites/config 'authsettingsV2' (learn.microsoft.com/azure/templates/
// microsoft.web/sites/config-authsettingsv2). Not compiled or deployed from this repository's CI.
//
// What it does: a browser that opens /api/status without a session is redirected to the Entra ID
// sign-in page, so on-call uses their own account (and sign-ins are in Entra's audit log). The
// machine routes (agent change reports, reconcile, drift, runs, health, trace) and the runtime's
// webhooks (Event Grid delivery) are excluded: they keep working with the
// function key alone, for scripts and probes. /api/status still needs the function key too (the
// function's own auth level), so the bookmark on-call uses is `https://<app>/api/status?code=<key>`.
// /api/static/* (the stylesheet) is anonymous at the function and behind sign-in here.

@description('Name of the Function App (from main.bicep).')
param functionAppName string

@description('Entra ID tenant that on-call signs in with.')
param tenantId string = subscription().tenantId

@description('Client ID of the app registration for the sign-in (redirect URI: https://<app host>/.auth/login/aad/callback).')
param clientId string

@description('Optional: users must be in this Entra group (object ID); empty = any account of the tenant.')
param allowedGroupId string = ''

resource app 'Microsoft.Web/sites@2023-12-01' existing = {
  name: functionAppName
}

resource signin 'Microsoft.Web/sites/config@2023-12-01' = {
  parent: app
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'RedirectToLoginPage'
      redirectToProvider: 'azureactivedirectory'
      // A path matches as written; sub-paths need a `/*` entry (`/folder/subfolder/*`: the App
      // Service product team in MicrosoftDocs/azure-docs#86514). Without them Event Grid's delivery
      // (/runtime/webhooks/eventgrid), the agents' change reports and /api/runs/{id} would be sent
      // to the sign-in page. tests/unit/test_status_signin_bicep.py holds this list to the routes.
      excludedPaths: [
        '/api/agent/changes'
        '/api/reconcile'
        '/api/runs'
        '/api/runs/*'
        '/api/drift'
        '/api/health'
        '/api/health/*'
        '/api/trace'
        '/admin/*'
        '/runtime/*'
      ]
    }
    httpSettings: {
      requireHttps: true
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          openIdIssuer: 'https://login.microsoftonline.com/${tenantId}/v2.0'
          clientId: clientId
        }
        validation: {
          allowedAudiences: [
            'api://${clientId}'
            clientId
          ]
          defaultAuthorizationPolicy: empty(allowedGroupId) ? {} : {
            allowedPrincipals: {
              groups: [
                allowedGroupId
              ]
            }
          }
        }
      }
    }
    login: {
      tokenStore: {
        enabled: false
      }
    }
  }
}
