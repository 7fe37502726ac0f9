{{/* Name of the chart's objects. */}}
{{- define "convoy-agent.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "convoy-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "convoy-agent.labels" -}}
{{ include "convoy-agent.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.extraLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "convoy-agent.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "convoy-agent.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "convoy-agent.credentialsSecret" -}}
{{- default (printf "%s-credentials" (include "convoy-agent.fullname" .)) .Values.credentialsSecret -}}
{{- end -}}

{{/* "certificate" when a pre-issued certificate is given, else "token". */}}
{{- define "convoy-agent.mode" -}}
{{- if or .Values.certificate.existingSecret .Values.certificate.cert -}}certificate{{- else -}}token{{- end -}}
{{- end -}}

{{- define "convoy-agent.certificateSecret" -}}
{{- default (printf "%s-certificate" (include "convoy-agent.fullname" .)) .Values.certificate.existingSecret -}}
{{- end -}}

{{- define "convoy-agent.tokenSecret" -}}
{{- default (printf "%s-bootstrap" (include "convoy-agent.fullname" .)) .Values.bootstrap.existingSecret -}}
{{- end -}}

{{/* The container image: repository@digest when a digest is pinned, else repository:tag (default appVersion). */}}
{{- define "convoy-agent.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}
