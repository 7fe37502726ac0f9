{{- define "reuse.where" -}}{{ .Template.Name }}{{- end }}
{{- define "reuse.outer" -}}outer-{{ include "reuse.where" . }}{{- end }}
{{- define "reuse.plain" -}}{{ .Chart.Name }}-{{ .Values.name }}{{- end }}
{{- define "reuse.twice" -}}{{ include "reuse.plain" . }}/{{ include "reuse.plain" . }}{{- end }}
{{- define "reuse.counter" -}}
{{- $_ := set .Values "count" (add1 (.Values.count | default 0)) -}}
{{ .Values.count }}
{{- end }}
{{- define "reuse.dump" -}}{{ toJson (dict "t" .Template) }}{{- end }}
{{- define "reuse.base" -}}{{ base .Template.BasePath }}{{- end }}
{{- define "reuse.root" -}}{{ include "reuse.where" .root }}:{{ .n }}{{- end }}
{{- define "reuse.labels" -}}
{{- $labels := merge (dict "name" (include "reuse.plain" .)) .Values.labels -}}
{{ toYaml $labels }}
{{- end }}
