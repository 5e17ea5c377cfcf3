{{/*
Expand the name of the chart.
*/}}
{{- define "caplab.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name.
We truncate at 63 chars because some Kubernetes name fields are limited to this (by the DNS naming spec).
If release name contains chart name it will be used as a full name.
*/}}
{{- define "caplab.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Create chart name and version as used by the chart label.
*/}}
{{- define "caplab.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels
*/}}
{{- define "caplab.labels" -}}
helm.sh/chart: {{ include "caplab.chart" . }}
{{ include "caplab.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: caplab
{{- end }}

{{/*
Selector labels
*/}}
{{- define "caplab.selectorLabels" -}}
app.kubernetes.io/name: {{ include "caplab.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Create the name of the service account to use
*/}}
{{- define "caplab.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "caplab.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The operator image reference (tag defaults to the chart's appVersion).
*/}}
{{- define "caplab.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
The member (caplab-node) image reference the operator puts into member pods.
*/}}
{{- define "caplab.nodeImage" -}}
{{- printf "%s:%s" .Values.nodeImage.repository (.Values.nodeImage.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
The caplab CLI image experiments run in.
*/}}
{{- define "caplab.cliImage" -}}
{{- printf "%s:%s" .Values.cliImage.repository (.Values.cliImage.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
Whether leader election is on: always when more than one replica runs.
*/}}
{{- define "caplab.leaderElection" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) }}true{{ else }}false{{ end }}
{{- end }}

{{/*
Prefix of the environment variables Kubernetes injects into pods for the operator
Service (e.g. CAPLAB_SERVICE_HOST / CAPLAB_SERVICE_PORT for a Service named "caplab").
Used by the helm test pod, because the CI cluster has no cluster DNS.
*/}}
{{- define "caplab.serviceEnvPrefix" -}}
{{- include "caplab.fullname" . | upper | replace "-" "_" }}
{{- end }}

{{/*
Hardened pod-level security context.
*/}}
{{- define "caplab.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.runAsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Hardened container-level security context.
*/}}
{{- define "caplab.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Remove every "x-kubernetes-validations" (CEL rules) from a CRD schema, in place.
Kubernetes < 1.23 does not know the field; Helm validates manifests against the server's
OpenAPI schema and would refuse the CRD. Those servers would ignore the rules anyway, and
the operator enforces the same rules itself. Argument: a dict or list (mutated).
*/}}
{{- define "caplab.stripCEL" -}}
{{- if kindIs "map" . }}
{{- $_ := unset . "x-kubernetes-validations" }}
{{- range $k, $v := . }}
{{- if or (kindIs "map" $v) (kindIs "slice" $v) }}
{{- include "caplab.stripCEL" $v }}
{{- end }}
{{- end }}
{{- else if kindIs "slice" . }}
{{- range . }}
{{- if or (kindIs "map" .) (kindIs "slice" .) }}
{{- include "caplab.stripCEL" . }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
