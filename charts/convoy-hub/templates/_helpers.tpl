{{- define "convoy-hub.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "convoy-hub.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "convoy-hub.labels" -}}
{{ include "convoy-hub.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "convoy-hub.certsSecret" -}}
{{- default (printf "%s-certs" (include "convoy-hub.fullname" .)) .Values.certs.existingSecret -}}
{{- end -}}
{{- define "convoy-hub.gitSecret" -}}
{{- default (printf "%s-git" (include "convoy-hub.fullname" .)) .Values.git.existingSecret -}}
{{- end -}}
{{- define "convoy-hub.storeSecret" -}}
{{- default (printf "%s-store" (include "convoy-hub.fullname" .)) .Values.store.postgres.existingSecret -}}
{{- end -}}
{{- define "convoy-hub.webhookSecret" -}}
{{- default (printf "%s-webhook" (include "convoy-hub.fullname" .)) .Values.webhook.existingSecret -}}
{{- end -}}
{{- define "convoy-hub.chartsSecret" -}}
{{- default (printf "%s-charts" (include "convoy-hub.fullname" .)) .Values.charts.existingSecret -}}
{{- end -}}

{{/* The container image: repository@digest when a digest is pinned, else repository:tag (default appVersion). */}}
{{- define "convoy-hub.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}
