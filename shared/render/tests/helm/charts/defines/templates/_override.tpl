{{- define "defines.block" -}}overridden {{ .Release.Name }}{{- end -}}
