{{- define "edge.nodata" -}}dot=[{{ . }}] root=[{{ $ }}]{{- end -}}
{{- define "edge.dollar" -}}{{ $.who }}/{{ .who }}{{- end -}}
{{- define "edge.recurse" -}}{{ .n }}{{ if gt .n 0 }},{{ include "edge.recurse" (dict "n" (sub .n 1)) }}{{ end }}{{- end -}}
{{- define "edge.field" -}}{{ .foo }}{{- end -}}
{{- define "edge.yamlblock" }}
key: value
list:
  - a
{{- end }}
