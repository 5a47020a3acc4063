{{/*
Names. The full name defaults to the release name when it already contains the chart name
(`helm install changegate ...` gives plain "changegate").
*/}}
{{- define "changegate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "changegate.fullname" -}}
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

{{- define "changegate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "changegate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "changegate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "changegate.labels" -}}
helm.sh/chart: {{ include "changegate.chart" . }}
{{ include "changegate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: changegate
{{- end }}

{{- define "changegate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "changegate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "changegate.secretName" -}}
{{- default (printf "%s-tls" (include "changegate.fullname" .)) .Values.certificates.secretName }}
{{- end }}

{{- define "changegate.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The webhook configuration's name is fixed: it is what the operator writes, what RBAC pins by
resourceNames, and what the runbook tells people to delete in an emergency.
*/}}
{{- define "changegate.webhookConfigurationName" -}}
changegate
{{- end }}

{{- define "changegate.certManagerIssuerName" -}}
{{- if .Values.certificates.certManager.issuerRef.name }}
{{- .Values.certificates.certManager.issuerRef.name }}
{{- else }}
{{- printf "%s-ca" (include "changegate.fullname" .) }}
{{- end }}
{{- end }}

{{- define "changegate.validate" -}}
{{- $modes := list "self-managed" "cert-manager" }}
{{- if not (has .Values.certificates.mode $modes) }}
{{- fail (printf "certificates.mode must be one of %s, not %q" (join ", " $modes) .Values.certificates.mode) }}
{{- end }}
{{- if not (has .Values.webhook.failurePolicy (list "Fail" "Ignore")) }}
{{- fail (printf "webhook.failurePolicy must be Fail or Ignore, not %q" .Values.webhook.failurePolicy) }}
{{- end }}
{{- if lt (int .Values.replicaCount) 1 }}
{{- fail "replicaCount must be at least 1" }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled (ge (int .Values.podDisruptionBudget.minAvailable) (int .Values.replicaCount)) }}
{{- fail "podDisruptionBudget.minAvailable must be below replicaCount, or no node could ever be drained (with one replica, disable the budget)" }}
{{- end }}
{{- end }}
