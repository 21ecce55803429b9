{{- define "cocoon.labels" -}}
app.kubernetes.io/name: cocoon
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "cocoon.operatorServiceAccount" -}}
{{ .Values.operator.serviceAccount.name }}
{{- end -}}
