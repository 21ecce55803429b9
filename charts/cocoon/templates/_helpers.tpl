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


{{/* Labels every object carries, without app.kubernetes.io/name (each component sets its own). */}}
{{- define "cocoon.commonLabels" -}}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: cocoon
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of a component: (dict "ctx" $ "name" "cocoon-operator") */}}
{{- define "cocoon.selectorLabels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- end -}}

{{/* An operand's image reference from the shared shape: (dict "ctx" $ "image" .Values.operator) */}}
{{- define "cocoon.image" -}}
{{- $version := .image.version | default .ctx.Chart.AppVersion -}}
{{- if hasPrefix "sha256:" $version -}}
{{- printf "%s/%s@%s" .image.repository .image.image $version -}}
{{- else -}}
{{- printf "%s/%s:%s" .image.repository .image.image $version -}}
{{- end -}}
{{- end -}}

{{- define "cocoon.operatorName" -}}
{{ .Release.Name }}-operator
{{- end -}}

{{/* The in-cluster URL of the operator's API (agents and meters call it). */}}
{{- define "cocoon.operatorUrl" -}}
{{ printf "https://%s.%s.svc:%d" (include "cocoon.operatorName" .) .Release.Namespace (int .Values.operator.api.port) }}
{{- end -}}

{{- define "cocoon.signingKeySecret" -}}
{{ .Values.operator.signingKey.existingSecret | default (printf "%s-signing-key" .Release.Name) }}
{{- end -}}

{{/* The restricted Pod Security profile, for containers that need nothing from the host. */}}
{{- define "cocoon.restrictedSecurityContext" -}}
allowPrivilegeEscalation: false
capabilities:
  drop: ["ALL"]
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The operator's network catalog (COCOON_NETWORKS): the provider's networks, plus the
in-cluster chain emulator as `emulator` when simulated. */}}
{{- define "cocoon.networks" -}}
{{- $nets := list }}
{{- range .Values.networks.list }}{{ $nets = append $nets . }}{{ end }}
{{- if .Values.simulated }}
{{- $url := printf "http://%s-chain-emulator.%s.svc:%d" .Release.Name .Release.Namespace (int .Values.chainEmulator.port) }}
{{- $nets = append $nets (dict "name" "emulator" "kind" "Emulator" "url" $url) }}
{{- end }}
{{- dict "default" .Values.networks.default "networks" $nets | toJson }}
{{- end }}
