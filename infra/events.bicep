// Event-driven passes (issue #16): ARM events of ONE watched Azure subscription, pushed to the
// app's Event Grid-triggered function `reconcile_event`. Deploy once per watched subscription,
// into a resource group OF THAT subscription (a subscription system topic's source must be the
// subscription it lives in):
//
//   az deployment group create -g <rg in the watched subscription> -f infra/events.bicep \
//     -p functionAppId=<site resource id> deadLetterStorageId=<storage account id> \
//        ownAppIds='["<reconciler client id>"]' subjectPrefixes=@prefixes.json
//
// `python -m scripts.event_prefixes <desired-state>` prints subjectPrefixes per subscription
// (reconciler.events.subject_prefixes: the hub, firewall, gateways, subnets, VNets and route
// tables of the design).
//
// Sources: Microsoft Learn "Azure subscription as an Event Grid source" (topic type
// Microsoft.Resources.Subscriptions, event types, subject = resource ID), "Event Grid system
// topics" (an Azure subscription's system topic is global), "Understand event filtering"
// (advanced filters: StringBeginsWith on `subject`, StringNotIn on `data.claims.appid`; at most
// 25 advanced filter values per event subscription, hence the chunking below), "Dead letter and
// retry policies" (StorageBlob dead-letter destination, maxDeliveryAttempts, eventTimeToLive).

@description('Resource ID of the Function App (Microsoft.Web/sites) that hosts reconcile_event.')
param functionAppId string

@description('Name of the Event Grid-triggered function.')
param functionName string = 'reconcile_event'

@description('Resource-ID prefixes (lower case) of the design in this subscription; events about anything else are not delivered.')
param subjectPrefixes array

@description('App (client) IDs of the reconciler\'s own identity: its reads (ARM POSTs) and fixes raise events that must not start a pass. The function checks the claims again (ARS_EVENT_OWN_IDS / AZURE_CLIENT_ID).')
param ownAppIds array

@description('Resource ID of the storage account that keeps undeliverable events (the app\'s own account is fine).')
param deadLetterStorageId string

@description('Blob container for dead-lettered events (created here).')
param deadLetterContainer string = 'eventgrid-deadletter'

@description('Name of the system topic.')
param topicName string = 'ars-reconciler-arm-events'

// One filter value is taken by the own-identity filter; the rest of the 25 by subject prefixes.
var prefixesPerSubscription = 20
var chunks = range(0, (length(subjectPrefixes) + prefixesPerSubscription - 1) / prefixesPerSubscription)

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: topicName
  location: 'global'
  properties: {
    source: subscription().id
    topicType: 'Microsoft.Resources.Subscriptions'
  }
}

module deadLetter 'events-deadletter.bicep' = {
  name: 'ars-events-deadletter'
  scope: resourceGroup(split(deadLetterStorageId, '/')[2], split(deadLetterStorageId, '/')[4])
  params: {
    storageName: last(split(deadLetterStorageId, '/'))
    containerName: deadLetterContainer
  }
}

resource subscriptions 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = [for i in chunks: {
  parent: topic
  name: 'ars-reconciler-${i}'
  dependsOn: [deadLetter]
  properties: {
    eventDeliverySchema: 'EventGridSchema'
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${functionAppId}/functions/${functionName}'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    filter: {
      // Only successes change anything; Failure/Cancel events are not delivered.
      includedEventTypes: [
        'Microsoft.Resources.ResourceWriteSuccess'
        'Microsoft.Resources.ResourceDeleteSuccess'
        'Microsoft.Resources.ResourceActionSuccess'
      ]
      advancedFilters: [
        {
          operatorType: 'StringBeginsWith'
          key: 'subject'
          values: take(skip(subjectPrefixes, i * prefixesPerSubscription), prefixesPerSubscription)
        }
        {
          operatorType: 'StringNotIn'
          key: 'data.claims.appid'
          values: ownAppIds
        }
      ]
    }
    retryPolicy: {
      // A lost event costs seconds of reaction time, not correctness: the timer still runs.
      maxDeliveryAttempts: 10
      eventTimeToLiveInMinutes: 60
    }
    deadLetterDestination: {
      endpointType: 'StorageBlob'
      properties: {
        resourceId: deadLetterStorageId
        blobContainerName: deadLetterContainer
      }
    }
  }
}]

output topicId string = topic.id
output eventSubscriptionCount int = length(chunks)
