{{- define "shared.name" -}}parent-{{ .Chart.Name }}{{- end -}}
{{- define "a.only" -}}A{{- end -}}