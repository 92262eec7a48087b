{{/* Names and labels shared by every object. */}}
{{- define "uptime.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "uptime.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "component" "hub") */}}
{{- define "uptime.selector" -}}
app.kubernetes.io/name: {{ .ctx.Chart.Name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "uptime.image" -}}
{{- printf "%s/uptime-%s:%s" .ctx.Values.image.registry .name (default .ctx.Chart.AppVersion .ctx.Values.image.tag) -}}
{{- end -}}

{{- define "uptime.secretName" -}}
{{- default (printf "%s-secrets" (include "uptime.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* A secret env var: (dict "ctx" $ "name" "HUB_DATABASE_URL" "key" "database-url" "optional" false) */}}
{{- define "uptime.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "uptime.secretName" .ctx }}
      key: {{ .key }}
      {{- if .optional }}
      optional: true
      {{- end }}
{{- end -}}

{{/* Restarts pods when the chart's Secret changes. */}}
{{- define "uptime.checksums" -}}
checksum/secrets: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end -}}

{{- define "uptime.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "uptime.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* Spread replicas over zones, then nodes: (dict "ctx" $ "component" "hub") */}}
{{- define "uptime.spread" -}}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: topology.kubernetes.io/zone
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "uptime.selector" . | nindent 8 }}
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "uptime.selector" . | nindent 8 }}
{{- end -}}

{{/*
The environment every hub container shares: identity from the pod, secrets, listen and
advertise addresses. (dict "ctx" $)
*/}}
{{- define "uptime.hubEnv" -}}
{{- $ := .ctx -}}
- name: HUB_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
- name: HUB_LISTEN
  value: "0.0.0.0:8080"
- name: HUB_ADVERTISE_ADDRESS
  value: "$(POD_IP):8080"
{{ include "uptime.secretEnv" (dict "ctx" $ "name" "HUB_DATABASE_URL" "key" "database-url") }}
{{ include "uptime.secretEnv" (dict "ctx" $ "name" "HUB_REDIS_URL" "key" "redis-url" "optional" true) }}
{{ include "uptime.secretEnv" (dict "ctx" $ "name" "HUB_TOKEN_KEYS" "key" "token-keys") }}
- name: HUB_MAX_CONNECTIONS
  value: {{ $.Values.hub.maxConnections | quote }}
- name: HUB_DRAIN_TIMEOUT_MS
  value: {{ mul $.Values.hub.drainTimeoutSeconds 1000 | quote }}
{{- with $.Values.hub.trustedProxies }}
- name: HUB_TRUSTED_PROXIES
  value: {{ . | quote }}
{{- end }}
{{- $diversity := $.Values.hub.prefixDiversity | toString }}
{{- if eq $diversity "auto" }}
{{- $diversity = ternary "true" "false" (or (ne $.Values.hub.trustedProxies "") (eq $.Values.hub.service.type "LoadBalancer")) }}
{{- end }}
- name: HUB_PREFIX_DIVERSITY
  value: {{ $diversity | quote }}
{{- with $.Values.hub.trustedValidators }}
- name: HUB_TRUSTED_VALIDATORS
  value: {{ . | quote }}
{{- end }}
{{- if and $.Values.tls.caSecret $.Values.tls.redisCAKey }}
- name: HUB_REDIS_TLS_CA
  value: /var/run/uptime/ca/{{ $.Values.tls.redisCAKey }}
{{- end }}
{{- range $k, $v := $.Values.hub.env }}
- name: {{ $k }}
  value: {{ $v | quote }}
{{- end }}
{{- end -}}

{{/* The hub container's probes and lifecycle. (dict "ctx" $) */}}
{{- define "uptime.hubProbes" -}}
ports:
  - name: http
    containerPort: 8080
    protocol: TCP
startupProbe:
  httpGet:
    path: /healthz
    port: http
  periodSeconds: 2
  failureThreshold: 60
livenessProbe:
  httpGet:
    path: /healthz
    port: http
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: http
  periodSeconds: 2
  timeoutSeconds: 3
  failureThreshold: 2
lifecycle:
  preStop:
    sleep:
      seconds: {{ .ctx.Values.hub.preStopSleepSeconds }}
{{- end -}}

{{/* Longer than the pause, the drain and the writers' flush. */}}
{{- define "uptime.hubGrace" -}}
{{- add .Values.hub.preStopSleepSeconds .Values.hub.drainTimeoutSeconds 15 -}}
{{- end -}}

{{/* The operator's CA certificates (tls.caSecret), for every pod that talks to the databases. */}}
{{- define "uptime.caMount" -}}
{{- if .Values.tls.caSecret }}
- name: ca
  mountPath: /var/run/uptime/ca
  readOnly: true
{{- end }}
{{- end -}}

{{- define "uptime.caVolume" -}}
{{- if .Values.tls.caSecret }}
- name: ca
  secret:
    secretName: {{ .Values.tls.caSecret }}
{{- end }}
{{- end -}}
