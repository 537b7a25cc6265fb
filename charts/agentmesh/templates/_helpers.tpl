{{/*
Names, labels and the workload model every template shares.

A "workload" is one Deployment of the mesh: the registry, one agent per domain,
one tool service per `tools` entry, and the optional scripted model. The
templates range over `agentmesh.workloads` instead of repeating the same
Deployment/Service/HPA/PDB four times.
*/}}

{{- define "agentmesh.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "agentmesh.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "agentmesh.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of the whole release (every component). */}}
{{- define "agentmesh.releaseSelector" -}}
app.kubernetes.io/name: {{ include "agentmesh.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels every resource carries; call with (dict "ctx" $ "component" "agent"). */}}
{{- define "agentmesh.labels" -}}
helm.sh/chart: {{ include "agentmesh.chart" .ctx }}
{{ include "agentmesh.releaseSelector" .ctx }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: agentmesh
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels of one workload: the common ones plus its selector labels. */}}
{{- define "agentmesh.workloadLabels" -}}
{{ include "agentmesh.labels" (dict "ctx" .ctx "component" .w.component) }}
{{- range $k, $v := .w.selector }}
{{- if not (has $k (list "app.kubernetes.io/name" "app.kubernetes.io/instance" "app.kubernetes.io/component")) }}
{{ $k }}: {{ $v | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "agentmesh.image" -}}
{{- $img := .image -}}
{{- $tag := $img.tag | default .appVersion | toString -}}
{{- if $img.digest -}}
{{- printf "%s/%s@%s" $img.registry $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s/%s:%s" $img.registry $img.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "agentmesh.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "agentmesh.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The registry's own ServiceAccount when discovery needs an API token. */}}
{{- define "agentmesh.discoveryServiceAccountName" -}}
{{- printf "%s-registry" (include "agentmesh.fullname" .) -}}
{{- end -}}

{{- define "agentmesh.svcDNS" -}}
{{- printf "%s.%s.svc.%s" .name .ctx.Release.Namespace .ctx.Values.clusterDomain -}}
{{- end -}}

{{- define "agentmesh.redisName" -}}
{{- printf "%s-redis" (include "agentmesh.fullname" .) -}}
{{- end -}}

{{- define "agentmesh.redisHost" -}}
{{- include "agentmesh.svcDNS" (dict "ctx" . "name" (include "agentmesh.redisName" .)) -}}
{{- end -}}

{{/*
The gauge of in-flight calls every service exports at /metrics
(agentmesh/metrics.py RPC_IN_FLIGHT): the HPA's Pods metric and the name the
prometheus-adapter rule serves it under, so the two cannot drift apart.
*/}}
{{- define "agentmesh.inFlightMetric" -}}
agentmesh_rpc_in_flight
{{- end -}}

{{- define "agentmesh.authSecret" -}}
{{- default (printf "%s-auth" (include "agentmesh.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{- /* The hook makes the auth Secret and the JWKS ConfigMap: auth on, auth.generate, no Secret of yours. */ -}}
{{- define "agentmesh.authGenerated" -}}
{{- $a := .Values.auth -}}
{{- if and (not $a.insecureNoAuth) $a.generate (not $a.existingSecret) (not $a.signingKey.existingSecret) (not $a.serviceTokens.existingSecret) -}}true{{- end -}}
{{- end -}}

{{- define "agentmesh.jwksConfigMap" -}}
{{- printf "%s-jwks" (include "agentmesh.fullname" .) -}}
{{- end -}}

{{/*
Recursive merge of two maps where the override wins, including false, 0 and ""
(sprig's mergeOverwrite ignores such "empty" values, which would make
`agents.x.autoscaling.enabled: false` lose to a default of true).
Call with (dict "base" $defaults "override" $values); returns JSON.
*/}}
{{- define "agentmesh.merge" -}}
{{- $out := deepCopy (.base | default dict) -}}
{{- range $k, $v := (.override | default dict) -}}
{{- $b := get $out $k -}}
{{- if and (kindIs "map" $v) (kindIs "map" $b) -}}
{{- $_ := set $out $k (include "agentmesh.merge" (dict "base" $b "override" $v) | fromJson) -}}
{{- else -}}
{{- $_ := set $out $k $v -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/*
One workload as a dict. Called with (dict "ctx" $ "kind" "agent" "key" "refunds" "v" $merged).
*/}}
{{- define "agentmesh.workload" -}}
{{- $ctx := .ctx -}}
{{- $v := .v -}}
{{- $full := include "agentmesh.fullname" $ctx -}}
{{- $selector := dict "app.kubernetes.io/name" (include "agentmesh.name" $ctx) "app.kubernetes.io/instance" $ctx.Release.Name "app.kubernetes.io/component" .kind -}}
{{- $name := printf "%s-%s" $full .kind -}}
{{- $serviceName := .kind -}}
{{- $healthService := "" -}}
{{- if eq .kind "agent" -}}
{{- $name = printf "%s-agent-%s" $full .key -}}
{{- $serviceName = .key -}}
{{- $healthService = "agentmesh.v1.AgentService" -}}
{{- $_ := set $selector "agentmesh.io/domain" .key -}}
{{- else if eq .kind "tool" -}}
{{- $name = printf "%s-tool-%s" $full .key -}}
{{- $serviceName = .key -}}
{{- $healthService = $v.healthService | default "" -}}
{{- $_ := set $selector "agentmesh.io/tool" .key -}}
{{- else if eq .kind "registry" -}}
{{- $healthService = "agentmesh.v1.ToolRegistryService" -}}
{{- end -}}
{{- $grpcPort := int $v.grpcPort -}}
{{- $tls := and $ctx.Values.tls.enabled (ne .kind "model") -}}
{{- $drainDelay := float64 ($v.drain.delaySeconds | default 0) -}}
{{- $drainGrace := float64 ($v.drain.graceSeconds | default 0) -}}
{{- $drainTotal := addf $drainDelay $drainGrace -}}
{{- $tgps := 0 -}}
{{- if kindIs "invalid" $v.terminationGracePeriodSeconds -}}
{{- $tgps = add (int (ceil $drainTotal)) 10 -}}
{{- else -}}
{{- $tgps = int $v.terminationGracePeriodSeconds -}}
{{- end -}}
{{- $scaler := "none" -}}
{{- $minReplicas := int ($v.replicaCount | default 0) -}}
{{- if and $v.autoscaling $v.autoscaling.enabled -}}
{{- $scaler = "hpa" -}}
{{- $minReplicas = int $v.autoscaling.minReplicas -}}
{{- end -}}
{{- if and $v.keda $v.keda.enabled -}}
{{- $scaler = ternary "both" "keda" (eq $scaler "hpa") -}}
{{- $minReplicas = int $v.keda.minReplicaCount -}}
{{- end -}}
{{- $tlsSecret := "" -}}
{{- if $tls -}}
{{- $tlsSecret = $v.tlsSecret | default $ctx.Values.tls.existingSecret -}}
{{- end -}}
{{- $tokenKey := "" -}}
{{- if has .kind (list "agent" "tool") -}}
{{- $tokenKey = $v.serviceTokenKey | default (printf "token-%s-%s" .kind .key) -}}
{{- end -}}
{{- $w := dict
  "kind" .kind
  "key" (.key | default "")
  "path" .path
  "name" $name
  "component" .kind
  "selector" $selector
  "v" $v
  "serviceName" $serviceName
  "grpcPort" $grpcPort
  "httpPort" (add $grpcPort 1000)
  "healthPort" (add $grpcPort 2000)
  "tls" $tls
  "tlsSecret" $tlsSecret
  "probePort" (ternary (add $grpcPort 2000) $grpcPort $tls)
  "healthService" $healthService
  "address" (printf "%s:%d" (include "agentmesh.svcDNS" (dict "ctx" $ctx "name" $name)) $grpcPort)
  "drainTotal" $drainTotal
  "terminationGracePeriodSeconds" $tgps
  "scaler" $scaler
  "minReplicas" $minReplicas
  "serviceTokenKey" $tokenKey
-}}
{{- toJson $w -}}
{{- end -}}

{{/*
Every workload of the release, in a stable order: registry, agents (by slug),
tools (by name), the scripted model. Returns JSON {"items": [...]}.
*/}}
{{- define "agentmesh.workloads" -}}
{{- $ctx := . -}}
{{- $items := list -}}
{{- $items = append $items (include "agentmesh.workload" (dict "ctx" $ctx "kind" "registry" "key" "" "path" "registry" "v" .Values.registry) | fromJson) -}}
{{- range $slug, $agent := .Values.agents -}}
{{- $v := include "agentmesh.merge" (dict "base" $ctx.Values.agentDefaults "override" $agent) | fromJson -}}
{{- if $v.enabled -}}
{{- $items = append $items (include "agentmesh.workload" (dict "ctx" $ctx "kind" "agent" "key" $slug "path" (printf "agents.%s" $slug) "v" $v) | fromJson) -}}
{{- end -}}
{{- end -}}
{{- range $toolName, $tool := .Values.tools -}}
{{- $v := include "agentmesh.merge" (dict "base" $ctx.Values.toolDefaults "override" $tool) | fromJson -}}
{{- if $v.enabled -}}
{{- $items = append $items (include "agentmesh.workload" (dict "ctx" $ctx "kind" "tool" "key" $toolName "path" (printf "tools.%s" $toolName) "v" $v) | fromJson) -}}
{{- end -}}
{{- end -}}
{{- if .Values.model.scripted.enabled -}}
{{- $m := .Values.model.scripted -}}
{{- $v := dict
  "replicaCount" 1
  "grpcPort" $m.port
  "resources" $m.resources
  "drain" (dict "delaySeconds" 0 "graceSeconds" 5)
  "terminationGracePeriodSeconds" nil
  "autoscaling" (dict "enabled" false)
  "pdb" (dict "enabled" false)
  "probes" .Values.registry.probes
-}}
{{- $items = append $items (include "agentmesh.workload" (dict "ctx" $ctx "kind" "model" "key" "" "path" "model.scripted" "v" $v) | fromJson) -}}
{{- end -}}
{{- toJson (dict "items" $items) -}}
{{- end -}}

{{/* The scripted model's base URL, or model.baseUrl. */}}
{{- define "agentmesh.modelBaseUrl" -}}
{{- if .Values.model.scripted.enabled -}}
{{- printf "http://%s:%d/v1" (include "agentmesh.svcDNS" (dict "ctx" . "name" (printf "%s-model" (include "agentmesh.fullname" .)))) (int .Values.model.scripted.port) -}}
{{- else -}}
{{- .Values.model.baseUrl -}}
{{- end -}}
{{- end -}}

{{/* Every gRPC/HTTP port the mesh's pods listen on (for NetworkPolicy egress). */}}
{{- define "agentmesh.meshPorts" -}}
{{- $ports := list -}}
{{- range (include "agentmesh.workloads" . | fromJson).items -}}
{{- $ports = append $ports (int .grpcPort) -}}
{{- if ne .kind "model" -}}
{{- $ports = append $ports (int .httpPort) -}}
{{- end -}}
{{- if .tls -}}
{{- $ports = append $ports (int .healthPort) -}}
{{- end -}}
{{- end -}}
{{- if .Values.redis.bundled.enabled -}}
{{- $ports = append $ports (int .Values.redis.bundled.port) -}}
{{- end -}}
{{- toJson (dict "ports" ($ports | uniq)) -}}
{{- end -}}

{{/*
Checks that JSON Schema cannot express; each fails `helm install/template` with
a message naming the value to change.
*/}}
{{- define "agentmesh.validate" -}}
{{- $ctx := . -}}
{{- $r := .Values.redis -}}
{{- if and (not $r.bundled.enabled) (not $r.external.existingSecret) -}}
{{- fail "redis: no Redis configured. Set redis.external.existingSecret to a Secret holding the Redis URL (key redis.external.key), or redis.bundled.enabled=true for a single-node Redis in the release." -}}
{{- end -}}
{{- if and $r.bundled.enabled $r.external.existingSecret -}}
{{- fail "redis: both redis.bundled.enabled=true and redis.external.existingSecret are set. Set redis.bundled.enabled=false to use the external Redis." -}}
{{- end -}}
{{- if and .Values.tracing.enabled (not .Values.tracing.endpoint) -}}
{{- fail "tracing.enabled=true needs tracing.endpoint (the OTLP collector, e.g. http://otel-collector.observability:4317)." -}}
{{- end -}}
{{- $full := include "agentmesh.fullname" . -}}
{{- $workloads := (include "agentmesh.workloads" . | fromJson).items -}}
{{- $agents := 0 -}}
{{- range $workloads -}}
{{- $w := . -}}
{{- $v := .v -}}
{{- $p := .path -}}
{{- $longest := ternary (printf "%s-headless" .name) .name (eq .kind "agent") -}}
{{- if gt (len $longest) 63 -}}
{{- fail (printf "%s: the Service name %q is longer than 63 characters; shorten the key, the release name or set fullnameOverride." $p $longest) -}}
{{- end -}}
{{- if eq .scaler "both" -}}
{{- fail (printf "%s: autoscaling.enabled and keda.enabled are both true; one domain is scaled by either the HPA or KEDA, never both. Set %s.autoscaling.enabled=false to scale on queue lag." $p $p) -}}
{{- end -}}
{{- if eq .scaler "hpa" -}}
{{- $a := $v.autoscaling -}}
{{- if gt (int $a.minReplicas) (int $a.maxReplicas) -}}
{{- fail (printf "%s.autoscaling: minReplicas (%d) is greater than maxReplicas (%d)." $p (int $a.minReplicas) (int $a.maxReplicas)) -}}
{{- end -}}
{{- if and (kindIs "invalid" $a.targetCPUUtilizationPercentage) (not $a.inFlight.enabled) -}}
{{- fail (printf "%s.autoscaling: no metric to scale on; set targetCPUUtilizationPercentage or inFlight.enabled=true." $p) -}}
{{- end -}}
{{- end -}}
{{- if eq .scaler "keda" -}}
{{- $k := $v.keda -}}
{{- if gt (int $k.minReplicaCount) (int $k.maxReplicaCount) -}}
{{- fail (printf "%s.keda: minReplicaCount (%d) is greater than maxReplicaCount (%d)." $p (int $k.minReplicaCount) (int $k.maxReplicaCount)) -}}
{{- end -}}
{{- /* Cluster and sentinel modes need keda.redis.addresses; the schema checks those. */ -}}
{{- if and (not $ctx.Values.redis.bundled.enabled) (eq $ctx.Values.keda.redis.mode "standalone") (not $ctx.Values.keda.redis.address) -}}
{{- fail (printf "%s.keda: with an external Redis, KEDA needs keda.redis.address (host:port of that Redis), or keda.redis.mode=cluster|sentinel with keda.redis.addresses." $p) -}}
{{- end -}}
{{- end -}}
{{- if le (float64 .terminationGracePeriodSeconds) (float64 .drainTotal) -}}
{{- fail (printf "%s.terminationGracePeriodSeconds (%d) must be greater than drain.delaySeconds + drain.graceSeconds (%v), or the pod is killed mid-drain." $p (int .terminationGracePeriodSeconds) .drainTotal) -}}
{{- end -}}
{{- if and $v.pdb $v.pdb.enabled -}}
{{- $pdb := $v.pdb -}}
{{- $hasMin := not (kindIs "invalid" $pdb.minAvailable) -}}
{{- $hasMax := not (kindIs "invalid" $pdb.maxUnavailable) -}}
{{- if not (or $hasMin $hasMax) -}}
{{- fail (printf "%s.pdb: set minAvailable or maxUnavailable." $p) -}}
{{- end -}}
{{- if $hasMin -}}
{{- /* Kubernetes rounds a percentage up: at n replicas the PDB keeps ceil(p*n/100). */ -}}
{{- $floor := max (int .minReplicas) 1 -}}
{{- $keep := 0 -}}
{{- if kindIs "string" $pdb.minAvailable -}}
{{- $keep = int (ceil (divf (mulf (atoi (trimSuffix "%" $pdb.minAvailable)) $floor) 100)) -}}
{{- else -}}
{{- $keep = int $pdb.minAvailable -}}
{{- end -}}
{{- if ge $keep $floor -}}
{{- fail (printf "%s.pdb.minAvailable (%v) keeps %d of the minimum %d replica(s) running, so the PDB would block every voluntary eviction; lower it or use maxUnavailable." $p $pdb.minAvailable $keep $floor) -}}
{{- end -}}
{{- else -}}
{{- if or (and (kindIs "string" $pdb.maxUnavailable) (eq (trimSuffix "%" $pdb.maxUnavailable) "0")) (and (not (kindIs "string" $pdb.maxUnavailable)) (lt (int $pdb.maxUnavailable) 1)) -}}
{{- fail (printf "%s.pdb.maxUnavailable must be at least 1 (or a percentage above 0%%), or the PDB blocks every voluntary eviction." $p) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and .tls (not .tlsSecret) -}}
{{- fail (printf "tls.enabled=true needs tls.existingSecret (or %s.tlsSecret): a Secret with %s, %s and %s." $p $ctx.Values.tls.certKey $ctx.Values.tls.keyKey $ctx.Values.tls.caKey) -}}
{{- end -}}
{{- if eq .kind "agent" -}}
{{- $agents = add1 $agents -}}
{{- /* The domain spec's checks live in agentmesh.specText, which renders it. */ -}}
{{- $_ := include "agentmesh.specText" $w -}}
{{- end -}}
{{- end -}}
{{- if and (gt $agents 0) (not (include "agentmesh.modelBaseUrl" .)) -}}
{{- fail "agents need a model: set model.baseUrl (an OpenAI-compatible API) or model.scripted.enabled=true." -}}
{{- end -}}
{{- if and .Values.model.scripted.enabled (empty .Values.model.scripted.script) -}}
{{- fail "model.scripted.enabled=true needs model.scripted.script (the YAML script the scripted model follows)." -}}
{{- end -}}
{{- end -}}

{{/*
The domain spec of one agent workload (call with the workload) as the text
mounted at AGENTMESH_DOMAIN_SPEC; the ConfigMap and the pod's checksum/spec
annotation both use it. The spec is given as a mapping, or as text
(--set-file agents.<slug>.spec=refunds.yaml), which is kept as given.

The agent validates its spec at start (agents/spec.py) and exits on a bad one,
so the pod would crash-loop: what the chart can see is refused here instead.
values.schema.json checks a mapping spec too, but sees text as just a string.

The slug must be the key under `agents:`: the chart names the Deployment,
Services, KEDA streams and consumer group and OTEL_SERVICE_NAME after the key,
the agent its queue, consumer group and registry entry after the slug. A spec
without a slug gets the key (for text: a `slug:` line in front of it).
*/}}
{{- define "agentmesh.specText" -}}
{{- $p := printf "%s.spec" .path -}}
{{- $spec := .v.spec -}}
{{- $data := $spec -}}
{{- if kindIs "string" $spec -}}
{{- $data = fromYaml $spec -}}
{{- if hasKey $data "Error" -}}
{{- fail (printf "%s is not a YAML mapping (the domain spec's fields: display_name, description, system_prompt, …): %s" $p (get $data "Error")) -}}
{{- end -}}
{{- end -}}
{{- if empty $data -}}
{{- fail (printf "%s is empty: put the domain spec there (a YAML mapping, or its text with --set-file %s=refunds.yaml)." $p $p) -}}
{{- end -}}
{{- if and (hasKey $data "slug") (ne (toString (get $data "slug")) .key) -}}
{{- fail (printf "%s: slug %q differs from its key %q under agents:. The chart names the Deployment, Services and KEDA triggers after the key, the agent its queue, consumer group and registry entry after the slug, so they must agree: set slug: %s or leave slug out (the chart then uses the key)." $p (toString (get $data "slug")) .key .key) -}}
{{- end -}}
{{- $missing := list -}}
{{- range list "display_name" "description" "system_prompt" -}}
{{- if empty (get $data .) -}}
{{- $missing = append $missing . -}}
{{- end -}}
{{- end -}}
{{- if $missing -}}
{{- fail (printf "%s has no %s: the agent refuses such a domain spec at start, so its pods would crash-loop (see docs/domain-spec.md)." $p (join ", " $missing)) -}}
{{- end -}}
{{- $withSlug := set (deepCopy $data) "slug" .key -}}
{{- if kindIs "string" $spec -}}
{{- $text := regexReplaceAll "\n+$" $spec "" -}}
{{- if not (hasKey $data "slug") -}}
{{- /* First, or right after a leading `---`. Re-read, since a text that opens with a
       flow mapping or an indented line would not mean the same with the line added. */ -}}
{{- $text = regexReplaceAll "\\A(---[^\\n]*\\n)?" $text (printf "${1}slug: %s\n" .key) -}}
{{- if ne (toJson (fromYaml $text)) (toJson $withSlug) -}}
{{- fail (printf "%s: the chart cannot put `slug: %s` in front of this text (it does not start with a `field: value` line, a comment or `---`); add that line to the text yourself." $p .key) -}}
{{- end -}}
{{- end -}}
{{- $text -}}
{{- else -}}
{{- toYaml $withSlug -}}
{{- end -}}
{{- end -}}
