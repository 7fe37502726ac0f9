{{- define "printing.nil" -}}{{ .Values.nothing }}{{- end -}}
