-- Argo CD health of an IdentityProvider or an AccessPolicy, for argocd-cm:
--   resource.customizations.health.sso-operator.dev_IdentityProvider
--   resource.customizations.health.sso-operator.dev_AccessPolicy
-- Healthy when Ready; Suspended when the provider is disabled; Degraded
-- when the controller says it cannot make progress (Stalled), when the
-- provider serves its last known good configuration through an outage,
-- or when Ready is False for any other reason; Progressing until the
-- controller has looked at the current generation, or while it checks it
-- the first time (Reconciling).
local hs = {status = "Progressing", message = "Waiting for the controller"}
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
if obj.status.observedGeneration ~= obj.metadata.generation then
  return hs
end
local ready, stalled, reconciling
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" then ready = c end
  if c.type == "Stalled" and c.status == "True" then stalled = c end
  if c.type == "Reconciling" and c.status == "True" then reconciling = c end
end
if stalled ~= nil then
  return {status = "Degraded", message = stalled.reason .. ": " .. stalled.message}
end
if ready == nil then
  return hs
end
local message = ready.reason .. ": " .. ready.message
if ready.status == "True" then
  return {status = "Healthy", message = message}
end
if ready.reason == "Disabled" then
  return {status = "Suspended", message = message}
end
-- Still being checked; a provider serving its last known good
-- configuration through an outage (reason Degraded) is Degraded.
if reconciling ~= nil and ready.reason ~= "Degraded" then
  return {status = "Progressing", message = message}
end
return {status = "Degraded", message = message}
