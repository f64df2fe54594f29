// quakestream's Azure resources: Event Hubs (Standard) with the three hubs and Capture to ADLS Gen2,
// the storage account (bronze, gold), Azure Cache for Redis, a container registry, the AKS cluster,
// and the identities and role assignments between them.
//   az deployment group create -g RG -f deploy/bicep/streaming.bicep -p deploy/bicep/streaming.parameters.json
// streaming.json beside it is the same template as ARM JSON (what `az bicep build` produces, kept by
// hand because no Bicep compiler installs offline); tests/integration/test_deploy.py checks that
// both declare the same resources, parameters and outputs, and the settings the pipeline relies on.

@description('Azure region of every resource.')
param location string = resourceGroup().location

@description('Prefix of the resource names; a hash of the resource group keeps global names unique.')
@minLength(3)
@maxLength(11)
param prefix string = 'quakestream'

@description('Azure Cache for Redis SKU: Basic C0 for dev, Standard C1 or more for production.')
@allowed(['Basic', 'Standard', 'Premium'])
param redisSkuName string = 'Standard'

@description('Azure Cache for Redis size (C family: 0..6).')
@minValue(0)
@maxValue(6)
param redisCapacity int = 1

@description('AKS node VM size.')
param aksNodeSize string = 'Standard_D2s_v5'

@description('AKS node count of the system pool.')
@minValue(1)
@maxValue(10)
param aksNodeCount int = 2

@description('Kubernetes namespace of the services (federated credential of the workload identity).')
param k8sNamespace string = 'quakestream'

var suffix = uniqueString(resourceGroup().id)
var namespaceName = '${prefix}-eh-${suffix}'
var storageName = toLower(take('${prefix}${suffix}', 24))
var redisName = '${prefix}-redis-${suffix}'
var aksName = '${prefix}-aks'
var acrName = toLower(take('${prefix}acr${suffix}', 50))
var archiveNameFormat = '{Namespace}/{EventHub}/p={PartitionId}/{Year}/{Month}/{Day}/{Hour}/{Minute}/{Second}'
var consumerGroup = 'speed'

// Built-in role definition ids.
var roleAcrPull = '7f951dda-4ed3-4680-a7ca-43fe172d538d'
var roleEventHubsDataSender = '2b629674-e913-4c01-ae53-ef4638d8f975'
var roleEventHubsDataReceiver = 'a638d3c7-ab3a-418d-83e6-5f17a39d4fde'
var roleStorageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'

// ---- storage: ADLS Gen2 (hierarchical namespace), bronze for Capture, gold for the batch layer ----
resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageName
  location: location
  sku: { name: 'Standard_LRS' }
  kind: 'StorageV2'
  properties: {
    isHnsEnabled: true
    minimumTlsVersion: 'TLS1_2'
    allowBlobPublicAccess: false
    supportsHttpsTrafficOnly: true
    accessTier: 'Hot'
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource bronze 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: 'bronze'
  properties: { publicAccess: 'None' }
}

resource gold 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: 'gold'
  properties: { publicAccess: 'None' }
}

// ---- Event Hubs ---------------------------------------------------------------------------------
resource ehNamespace 'Microsoft.EventHub/namespaces@2024-01-01' = {
  name: namespaceName
  location: location
  sku: { name: 'Standard', tier: 'Standard', capacity: 1 }
  properties: {
    minimumTlsVersion: '1.2'
    isAutoInflateEnabled: false
  }
}

resource earthquakeHub 'Microsoft.EventHub/namespaces/eventhubs@2024-01-01' = {
  parent: ehNamespace
  name: 'earthquake-events'
  properties: {
    partitionCount: 4
    messageRetentionInDays: 7
    captureDescription: {
      enabled: true
      encoding: 'Avro'
      intervalInSeconds: 300
      sizeLimitInBytes: 10485760
      skipEmptyArchives: true
      destination: {
        name: 'EventHubArchive.AzureBlockBlob'
        properties: {
          storageAccountResourceId: storage.id
          blobContainer: bronze.name
          archiveNameFormat: archiveNameFormat
        }
      }
    }
  }
}

resource weatherHub 'Microsoft.EventHub/namespaces/eventhubs@2024-01-01' = {
  parent: ehNamespace
  name: 'weather-events'
  properties: {
    partitionCount: 2
    messageRetentionInDays: 3
  }
}

resource clickstreamHub 'Microsoft.EventHub/namespaces/eventhubs@2024-01-01' = {
  parent: ehNamespace
  name: 'clickstream-events'
  properties: {
    partitionCount: 4
    messageRetentionInDays: 1
  }
}

// The speed layer's consumer group on each hub ($Default always exists).
resource earthquakeSpeed 'Microsoft.EventHub/namespaces/eventhubs/consumergroups@2024-01-01' = {
  parent: earthquakeHub
  name: consumerGroup
}

resource weatherSpeed 'Microsoft.EventHub/namespaces/eventhubs/consumergroups@2024-01-01' = {
  parent: weatherHub
  name: consumerGroup
}

resource clickstreamSpeed 'Microsoft.EventHub/namespaces/eventhubs/consumergroups@2024-01-01' = {
  parent: clickstreamHub
  name: consumerGroup
}

// Shared access policies: send (ingestor), listen (speed-aggregator), and send-listen for one
// connection string shared by every pod (the Secret of deploy/k8s). Keys are read with
// `az eventhubs namespace authorization-rule keys list`, never emitted as outputs.
resource sendRule 'Microsoft.EventHub/namespaces/authorizationRules@2024-01-01' = {
  parent: ehNamespace
  name: 'send'
  properties: { rights: ['Send'] }
}

resource listenRule 'Microsoft.EventHub/namespaces/authorizationRules@2024-01-01' = {
  parent: ehNamespace
  name: 'listen'
  properties: { rights: ['Listen'] }
}

resource sendListenRule 'Microsoft.EventHub/namespaces/authorizationRules@2024-01-01' = {
  parent: ehNamespace
  name: 'send-listen'
  properties: { rights: ['Send', 'Listen'] }
}

// ---- Azure Cache for Redis (TLS only; the pods reach it through their stunnel sidecar) -------------
resource redis 'Microsoft.Cache/redis@2024-03-01' = {
  name: redisName
  location: location
  properties: {
    sku: { name: redisSkuName, family: redisSkuName == 'Premium' ? 'P' : 'C', capacity: redisCapacity }
    enableNonSslPort: false
    minimumTlsVersion: '1.2'
    redisVersion: '6'
    redisConfiguration: {
      'maxmemory-policy': 'noeviction'
    }
  }
}

// ---- container registry and AKS -------------------------------------------------------------------
resource acr 'Microsoft.ContainerRegistry/registries@2023-07-01' = {
  name: acrName
  location: location
  sku: { name: 'Basic' }
  properties: { adminUserEnabled: false }
}

resource aks 'Microsoft.ContainerService/managedClusters@2024-05-01' = {
  name: aksName
  location: location
  identity: { type: 'SystemAssigned' }
  properties: {
    dnsPrefix: aksName
    agentPoolProfiles: [
      {
        name: 'system'
        mode: 'System'
        count: aksNodeCount
        vmSize: aksNodeSize
        osType: 'Linux'
        osSKU: 'AzureLinux'
        type: 'VirtualMachineScaleSets'
      }
    ]
    networkProfile: {
      networkPlugin: 'azure'
      networkPluginMode: 'overlay'
    }
    oidcIssuerProfile: { enabled: true }
    securityProfile: { workloadIdentity: { enabled: true } }
  }
}

// ---- identities and role assignments --------------------------------------------------------------
// The nodes pull the image from the registry.
resource aksAcrPull 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: acr
  name: guid(acr.id, aks.id, roleAcrPull)
  properties: {
    principalId: aks.properties.identityProfile.kubeletidentity.objectId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleAcrPull)
  }
}

// Optional Microsoft Entra Workload ID for the pods (service account quakestream): Event Hubs data
// send/receive and the storage account, without keys (README, "AKS").
resource workload 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${prefix}-workload'
  location: location
}

resource workloadFederation 'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials@2023-01-31' = {
  parent: workload
  name: 'aks-${k8sNamespace}'
  properties: {
    issuer: aks.properties.oidcIssuerProfile.issuerURL
    subject: 'system:serviceaccount:${k8sNamespace}:quakestream'
    audiences: ['api://AzureADTokenExchange']
  }
}

resource workloadEhSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: ehNamespace
  name: guid(ehNamespace.id, workload.id, roleEventHubsDataSender)
  properties: {
    principalId: workload.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleEventHubsDataSender)
  }
}

resource workloadEhReceiver 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: ehNamespace
  name: guid(ehNamespace.id, workload.id, roleEventHubsDataReceiver)
  properties: {
    principalId: workload.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleEventHubsDataReceiver)
  }
}

resource workloadStorage 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: storage
  name: guid(storage.id, workload.id, roleStorageBlobDataContributor)
  properties: {
    principalId: workload.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleStorageBlobDataContributor)
  }
}

// ---- outputs (as in the tutorial: namespace, hub, Redis host, AKS name; plus what the README uses) --
output eventHubsNamespace string = ehNamespace.name
output eventHubsHost string = '${ehNamespace.name}.servicebus.windows.net'
output eventHubName string = earthquakeHub.name
output redisHost string = redis.properties.hostName
output redisSslPort int = redis.properties.sslPort
output aksName string = aks.name
output acrLoginServer string = acr.properties.loginServer
output storageAccount string = storage.name
output captureUrl string = '${storage.properties.primaryEndpoints.blob}${bronze.name}'
output workloadIdentityClientId string = workload.properties.clientId
