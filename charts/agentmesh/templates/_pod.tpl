{{/*
The pod template of one workload; called with (dict "ctx" $ "w" $workload).
Environment: the configuration contract of docs/configuration.md.
*/}}

{{- define "agentmesh.authNeeded" -}}
{{- if and (not .ctx.Values.auth.insecureNoAuth) (has .w.kind (list "registry" "agent" "tool")) -}}true{{- end -}}
{{- end -}}

{{- define "agentmesh.signingKeyNeeded" -}}
{{- if and (include "agentmesh.authNeeded" .) (has .w.kind (list "registry" "agent")) -}}true{{- end -}}
{{- end -}}

{{- define "agentmesh.jwksFileNeeded" -}}
{{- if and (include "agentmesh.authNeeded" .) (not .ctx.Values.auth.jwks.url) -}}true{{- end -}}
{{- end -}}

{{- define "agentmesh.redisEnv" -}}
{{- $ctx := . -}}
{{- $r := .Values.redis -}}
{{- if $r.bundled.enabled }}
{{- $host := include "agentmesh.redisHost" $ctx }}
{{- if $r.bundled.auth.existingSecret }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $r.bundled.auth.existingSecret }}
      key: {{ $r.bundled.auth.key }}
- name: REDIS_URL
  value: {{ printf "redis://:$(REDIS_PASSWORD)@%s:%d/0" $host (int $r.bundled.port) | quote }}
{{- else }}
- name: REDIS_URL
  value: {{ printf "redis://%s:%d/0" $host (int $r.bundled.port) | quote }}
{{- end }}
{{- else }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $r.external.existingSecret }}
      key: {{ $r.external.key }}
{{- end }}
{{- end -}}

{{- define "agentmesh.env" -}}
{{- $ctx := .ctx -}}
{{- $w := .w -}}
{{- $v := $w.v -}}
{{- $values := $ctx.Values -}}
{{- $kind := $w.kind -}}
{{- $grpc := has $kind (list "registry" "agent" "tool") -}}
- name: K8S_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: K8S_POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: K8S_NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
- name: AGENTMESH_ROLE
  value: {{ $kind | quote }}
- name: AGENTMESH_SERVICE_NAME
  value: {{ $w.serviceName | quote }}
- name: AGENTMESH_GRPC_PORT
  value: {{ $w.grpcPort | int | quote }}
{{- if $grpc }}
- name: AGENTMESH_HTTP_PORT
  value: {{ $w.httpPort | int | quote }}
- name: AGENTMESH_ADVERTISE_ADDR
  value: {{ $w.address | quote }}
{{- end }}
{{- with $values.bindHost }}
- name: AGENTMESH_BIND_HOST
  value: {{ . | quote }}
{{- end }}
{{- if and (eq $kind "registry") $values.discovery.enabled }}
- name: AGENTMESH_DISCOVERY_NAMESPACES
  value: {{ join "," ($values.discovery.namespaces | default (list $ctx.Release.Namespace)) | quote }}
- name: AGENTMESH_DISCOVERY_CLUSTER_DOMAIN
  value: {{ $values.clusterDomain | quote }}
{{- end }}
{{- if has $kind (list "agent" "tool") }}
- name: AGENTMESH_REGISTRY
  value: {{ printf "%s:%d" (include "agentmesh.svcDNS" (dict "ctx" $ctx "name" (printf "%s-registry" (include "agentmesh.fullname" $ctx)))) (int $values.registry.grpcPort) | quote }}
{{- end }}
{{- if $grpc }}
{{- include "agentmesh.redisEnv" $ctx }}
{{- if $values.auth.insecureNoAuth }}
- name: AGENTMESH_INSECURE_NO_AUTH
  value: "true"
{{- else }}
- name: AGENTMESH_JWKS
  value: {{ $values.auth.jwks.url | default "/etc/agentmesh/auth/jwks.json" | quote }}
{{- with $values.auth.issuers }}
- name: AGENTMESH_JWT_ISSUERS
  value: {{ join "," . | quote }}
{{- end }}
{{- if include "agentmesh.signingKeyNeeded" . }}
- name: AGENTMESH_SIGNING_KEY
  value: /etc/agentmesh/auth/signing-key.pem
{{- end }}
{{- if $w.serviceTokenKey }}
- name: AGENTMESH_SERVICE_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $values.auth.serviceTokens.existingSecret | default (include "agentmesh.authSecret" $ctx) }}
      key: {{ $w.serviceTokenKey }}
{{- end }}
{{- end }}
{{- end }}
{{- if $w.tls }}
- name: AGENTMESH_TLS_CERT
  value: /etc/agentmesh/tls/tls.crt
- name: AGENTMESH_TLS_KEY
  value: /etc/agentmesh/tls/tls.key
- name: AGENTMESH_TLS_CA
  value: /etc/agentmesh/tls/ca.crt
- name: AGENTMESH_HEALTH_PORT
  value: {{ $w.healthPort | int | quote }}
{{- end }}
{{- if eq $kind "agent" }}
- name: AGENTMESH_DOMAIN_SPEC
  value: /etc/agentmesh/domain/spec.yaml
- name: AGENTMESH_WORKER_CONCURRENCY
  value: {{ $v.workerConcurrency | int | quote }}
- name: AGENTMESH_QUEUE_SHARDS
  value: {{ $values.queue.shards | int | quote }}
- name: MODEL_BASE_URL
  value: {{ include "agentmesh.modelBaseUrl" $ctx | quote }}
{{- with ($values.model.name | default (ternary "scripted" "" $values.model.scripted.enabled)) }}
- name: MODEL_NAME
  value: {{ . | quote }}
{{- end }}
{{- with $values.model.existingSecret }}
- name: MODEL_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $values.model.apiKeyKey }}
{{- end }}
{{- if $values.priceTable }}
- name: AGENTMESH_PRICE_TABLE
  value: /etc/agentmesh/prices/prices.yaml
{{- end }}
{{- end }}
{{- if eq $kind "tool" }}
- name: AGENTMESH_TOOL
  value: {{ $v.tool | default $w.key | quote }}
{{- end }}
{{- if eq $kind "model" }}
- name: AGENTMESH_MODEL_SCRIPT
  value: /etc/agentmesh/model/script.yaml
{{- end }}
{{- if $grpc }}
- name: AGENTMESH_DRAIN_DELAY
  value: {{ $v.drain.delaySeconds | toString | quote }}
- name: AGENTMESH_DRAIN_GRACE
  value: {{ $v.drain.graceSeconds | toString | quote }}
- name: AGENTMESH_MAX_IN_FLIGHT
  value: {{ $v.maxInFlight | int | quote }}
{{- end }}
- name: AGENTMESH_LOG_LEVEL
  value: {{ $values.logging.level | quote }}
- name: AGENTMESH_LOG_FORMAT
  value: {{ $values.logging.format | quote }}
{{- if $values.tracing.enabled }}
{{- $attrs := list
  "k8s.namespace.name=$(K8S_POD_NAMESPACE)"
  "k8s.pod.name=$(K8S_POD_NAME)"
  "k8s.node.name=$(K8S_NODE_NAME)"
  (printf "k8s.deployment.name=%s" $w.name)
  (printf "service.namespace=%s" (include "agentmesh.fullname" $ctx))
  (printf "service.version=%s" $ctx.Chart.AppVersion)
  (printf "agentmesh.role=%s" $kind)
-}}
{{- range $k, $val := $values.tracing.resourceAttributes }}
{{- $attrs = append $attrs (printf "%s=%v" $k $val) }}
{{- end }}
- name: OTEL_SERVICE_NAME
  value: {{ $w.serviceName | quote }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ join "," $attrs | quote }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $values.tracing.endpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ $values.tracing.protocol | quote }}
- name: OTEL_TRACES_SAMPLER
  value: {{ $values.tracing.sampler | quote }}
{{- with $values.tracing.samplerArg }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ . | toString | quote }}
{{- end }}
{{- end }}
{{- with $v.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "agentmesh.probe" -}}
{{- $w := .w -}}
{{- if eq $w.kind "model" -}}
tcpSocket:
  port: http
{{- else -}}
grpc:
  port: {{ $w.probePort | int }}
  {{- with $w.healthService }}
  service: {{ . }}
  {{- end }}
{{- end }}
{{- range $k, $val := .timing }}
{{ $k }}: {{ $val | int }}
{{- end }}
{{- end -}}

{{- define "agentmesh.podTemplate" -}}
{{- $ctx := .ctx -}}
{{- $w := .w -}}
{{- $v := $w.v -}}
{{- $values := $ctx.Values -}}
{{- $full := include "agentmesh.fullname" $ctx -}}
{{- $discovery := and (eq $w.kind "registry") $values.discovery.enabled -}}
metadata:
  labels:
    {{- include "agentmesh.workloadLabels" (dict "ctx" $ctx "w" $w) | nindent 4 }}
    {{- with $v.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- $annotations := dict }}
  {{- if eq $w.kind "agent" }}
  {{- $_ := set $annotations "checksum/spec" (include "agentmesh.specText" $w | sha256sum) }}
  {{- if $values.priceTable }}
  {{- $_ := set $annotations "checksum/price-table" (toYaml $values.priceTable | sha256sum) }}
  {{- end }}
  {{- end }}
  {{- if eq $w.kind "model" }}
  {{- $_ := set $annotations "checksum/script" (toYaml $values.model.scripted.script | sha256sum) }}
  {{- end }}
  {{- $annotations = merge (deepCopy ($v.podAnnotations | default dict)) $annotations }}
  {{- with $annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- if $discovery }}
  serviceAccountName: {{ include "agentmesh.discoveryServiceAccountName" $ctx }}
  automountServiceAccountToken: true
  {{- else }}
  serviceAccountName: {{ include "agentmesh.serviceAccountName" $ctx }}
  automountServiceAccountToken: false
  {{- end }}
  enableServiceLinks: false
  terminationGracePeriodSeconds: {{ $w.terminationGracePeriodSeconds | int }}
  {{- with $values.image.pullSecrets }}
  imagePullSecrets:
    {{- range . }}
    - name: {{ . }}
    {{- end }}
  {{- end }}
  {{- with $v.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  securityContext:
    {{- toYaml $values.podSecurityContext | nindent 4 }}
  containers:
    - name: {{ $w.kind }}
      image: {{ include "agentmesh.image" (dict "image" $values.image "appVersion" $ctx.Chart.AppVersion) }}
      imagePullPolicy: {{ $values.image.pullPolicy }}
      securityContext:
        {{- toYaml $values.containerSecurityContext | nindent 8 }}
      ports:
        {{- if eq $w.kind "model" }}
        - name: http
          containerPort: {{ $w.grpcPort | int }}
          protocol: TCP
        {{- else }}
        - name: grpc
          containerPort: {{ $w.grpcPort | int }}
          protocol: TCP
        - name: http
          containerPort: {{ $w.httpPort | int }}
          protocol: TCP
        {{- if $w.tls }}
        - name: health
          containerPort: {{ $w.healthPort | int }}
          protocol: TCP
        {{- end }}
        {{- end }}
      env:
        {{- include "agentmesh.env" (dict "ctx" $ctx "w" $w) | nindent 8 }}
      startupProbe:
        {{- include "agentmesh.probe" (dict "w" $w "timing" $v.probes.startup) | nindent 8 }}
      readinessProbe:
        {{- include "agentmesh.probe" (dict "w" $w "timing" $v.probes.readiness) | nindent 8 }}
      livenessProbe:
        {{- include "agentmesh.probe" (dict "w" $w "timing" $v.probes.liveness) | nindent 8 }}
      {{- with $v.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        {{- if or (include "agentmesh.signingKeyNeeded" .) (include "agentmesh.jwksFileNeeded" .) }}
        - name: auth
          mountPath: /etc/agentmesh/auth
          readOnly: true
        {{- end }}
        {{- if $w.tls }}
        - name: tls
          mountPath: /etc/agentmesh/tls
          readOnly: true
        {{- end }}
        {{- if eq $w.kind "agent" }}
        - name: domain-spec
          mountPath: /etc/agentmesh/domain
          readOnly: true
        {{- if $values.priceTable }}
        - name: price-table
          mountPath: /etc/agentmesh/prices
          readOnly: true
        {{- end }}
        {{- end }}
        {{- if eq $w.kind "model" }}
        - name: script
          mountPath: /etc/agentmesh/model
          readOnly: true
        {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: 128Mi
    {{- if or (include "agentmesh.signingKeyNeeded" .) (include "agentmesh.jwksFileNeeded" .) }}
    - name: auth
      projected:
        defaultMode: 0440
        sources:
          {{- if include "agentmesh.signingKeyNeeded" . }}
          - secret:
              name: {{ $values.auth.signingKey.existingSecret | default (include "agentmesh.authSecret" $ctx) }}
              items:
                - key: {{ $values.auth.signingKey.key }}
                  path: signing-key.pem
          {{- end }}
          {{- if include "agentmesh.jwksFileNeeded" . }}
          {{- if and (include "agentmesh.authGenerated" $ctx) (not $values.auth.jwks.existingSecret) }}
          - configMap:
              name: {{ include "agentmesh.jwksConfigMap" $ctx }}
              items:
                - key: jwks.json
                  path: jwks.json
          {{- else }}
          - secret:
              name: {{ $values.auth.jwks.existingSecret | default (include "agentmesh.authSecret" $ctx) }}
              items:
                - key: {{ $values.auth.jwks.key }}
                  path: jwks.json
          {{- end }}
          {{- end }}
    {{- end }}
    {{- if $w.tls }}
    - name: tls
      secret:
        secretName: {{ $w.tlsSecret }}
        defaultMode: 0440
        items:
          - key: {{ $values.tls.certKey }}
            path: tls.crt
          - key: {{ $values.tls.keyKey }}
            path: tls.key
          - key: {{ $values.tls.caKey }}
            path: ca.crt
    {{- end }}
    {{- if eq $w.kind "agent" }}
    - name: domain-spec
      configMap:
        name: {{ $w.name }}
    {{- if $values.priceTable }}
    - name: price-table
      configMap:
        name: {{ printf "%s-price-table" $full }}
    {{- end }}
    {{- end }}
    {{- if eq $w.kind "model" }}
    - name: script
      configMap:
        name: {{ $w.name }}
    {{- end }}
  {{- with $v.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- range . }}
    {{- $c := deepCopy . }}
    {{- if not (hasKey $c "labelSelector") }}
    {{- $_ := set $c "labelSelector" (dict "matchLabels" $w.selector) }}
    {{- end }}
    - {{- toYaml $c | nindent 6 }}
    {{- end }}
  {{- end }}
{{- end -}}
