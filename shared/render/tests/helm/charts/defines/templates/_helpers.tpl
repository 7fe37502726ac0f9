{{- define "defines.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "defines.labels" -}}
app.kubernetes.io/name: {{ include "defines.name" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- with .Values.extraLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}
{{- define "defines.withArgs" -}}
{{ .a }}-{{ .b }}-{{ .root.Release.Name }}
{{- end -}}
{{- define "defines.list" -}}
- one
- two
{{- end -}}
